"""Operator commands on the app's ``credits`` group: init-credits, audit, sweep-holds, and
the periodic sweeper."""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import insert, select, update

from shared.config import load_settings
from shared.db import utcnow
from shared.migrate import upgrade
from services.credits.app import create_app
from services.credits.models import CreditAccount, CreditHold, CreditLedger
from services.credits.sweeper import run_sweeper
from tests.conftest import MYSQL_SERVER_URL, create_mysql_database, drop_mysql_database


def invoke(app, *args):
    return app.test_cli_runner().invoke(args=["credits", *args])


def ledger_keys(credits, user_id):
    with credits.db.read() as session:
        return session.scalars(select(CreditLedger.idempotency_key).where(CreditLedger.user_id == user_id)
                               .order_by(CreditLedger.id)).all()


def test_init_credits_grants_the_bonus_once_whatever_the_balance(credits_app, credits, adjustments, fake_peers,
                                                                new_user_id):
    never_seen, spent_to_zero, without_row = new_user_id(), new_user_id(), new_user_id()
    credits.open_account(spent_to_zero)
    adjustments.deduct(spent_to_zero, 500, "spent it all", operator_id=1)
    with credits.db.transaction() as session:  # an account from before the ledger existed
        session.add(CreditAccount(user_id=without_row, available=0, held=0, lifetime_earned=0, lifetime_spent=0))
    fake_peers.user_ids = [spent_to_zero, without_row, never_seen]

    first = invoke(credits_app, "init-credits", "--page-size", "2")
    assert first.exit_code == 0, first.output
    assert "3 users checked, 2 received the signup bonus" in first.output
    assert credits.balance(never_seen).available == 500
    assert credits.balance(without_row).available == 500
    assert credits.balance(spent_to_zero).available == 0

    again = invoke(credits_app, "init-credits")
    assert "3 users checked, 0 received the signup bonus" in again.output
    assert ledger_keys(credits, without_row) == [f"signup_bonus:{without_row}"]


def test_init_credits_fails_loudly_when_auth_is_down(settings_env):
    from shared.embedded import free_port
    app = create_app(load_settings({**settings_env, "AUTH_URL": f"http://127.0.0.1:{free_port()}"}))
    try:
        result = invoke(app, "init-credits")
    finally:
        app.extensions["db"].dispose()
    assert result.exit_code == 1
    assert "AUTH_UNAVAILABLE" in result.output


def expire_now(credits, job_id):
    with credits.db.transaction() as session:
        session.execute(update(CreditHold).where(CreditHold.job_id == job_id)
                        .values(expires_at=utcnow() - timedelta(seconds=1)))


def test_sweep_releases_expired_holds_of_finished_or_gone_jobs(credits_app, credits, fake_peers, new_user_id, job_id):
    user_id = new_user_id()
    jobs = {name: f"{job_id}-{name}" for name in ("done", "gone", "running", "broken", "fresh")}
    for name, job in jobs.items():
        credits.hold(user_id, job, "text2img", 2)
        if name != "fresh":
            expire_now(credits, job)
    credits.capture(jobs["done"], f"capture:{jobs['done']}:0")
    fake_peers.jobs.update({jobs["done"]: "succeeded", jobs["running"]: "running"})
    fake_peers.broken_jobs.add(jobs["broken"])

    first = invoke(credits_app, "sweep-holds")
    assert first.exit_code == 1  # the gateway failed for one job
    assert f"released 15 credits of job {jobs['done']}" in first.output
    assert f"released 30 credits of job {jobs['gone']}" in first.output
    assert f"kept the hold of job {jobs['running']}" in first.output
    assert credits.balance(user_id).to_dict() == {"available": 500 - 150 + 45, "held": 30 + 30 + 30}

    fake_peers.broken_jobs.discard(jobs["broken"])
    second = invoke(credits_app, "sweep-holds")
    assert second.exit_code == 0, second.output
    assert f"released 30 credits of job {jobs['broken']}" in second.output
    assert jobs["done"] not in second.output and jobs["gone"] not in second.output
    assert credits.balance(user_id).to_dict() == {"available": 425, "held": 60}
    with credits.db.read() as session:
        statuses = {job: session.get(CreditHold, job).status for job in jobs.values()}
    assert statuses == {jobs["done"]: "expired", jobs["gone"]: "expired", jobs["broken"]: "expired",
                        jobs["running"]: "open", jobs["fresh"]: "open"}
    assert f"expire:{jobs['gone']}" in ledger_keys(credits, user_id)
    late = credits.release(jobs["gone"], f"release:{jobs['gone']}")
    assert late["released"] == 0


def test_run_sweeper_sweeps_periodically_until_stopped(credits_app, credits, new_user_id, job_id):
    user_id = new_user_id()
    credits.hold(user_id, job_id, "upscale", 1)
    expire_now(credits, job_id)
    stop = threading.Event()
    thread = threading.Thread(target=run_sweeper, args=(credits_app, 0.05, stop), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while credits.balance(user_id).held and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert credits.balance(user_id).to_dict() == {"available": 500, "held": 0}


@pytest.fixture
def private_app(db_backend, settings_env, tmp_path):
    """The credits app on a database of its own, so corrupting it harms no other test."""
    if db_backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'audit.db'}"
    else:
        url = create_mysql_database(MYSQL_SERVER_URL)
    upgrade("credits", url)
    app = create_app(load_settings({**settings_env, "CREDITS_DATABASE_URL": url}))
    yield app
    app.extensions["db"].dispose()
    if db_backend == "mariadb":
        drop_mysql_database(url)


def test_audit_is_clean_then_reports_every_kind_of_discrepancy(private_app, new_user_id):
    credits = private_app.extensions["credits"]
    drifted, overcharged, gapped = new_user_id(), new_user_id(), new_user_id()
    for user_id in (drifted, overcharged, gapped):
        credits.open_account(user_id)
    credits.hold(overcharged, "job-over", "text2img", 1)
    credits.capture("job-over", "capture:job-over:0")
    clean = invoke(private_app, "audit")
    assert clean.exit_code == 0, clean.output
    assert "credits audit: clean" in clean.output

    with credits.db.transaction() as session:
        session.execute(update(CreditAccount).where(CreditAccount.user_id == drifted).values(available=-7))
        session.execute(update(CreditHold).where(CreditHold.job_id == "job-over").values(captured=30, status="settled"))
        session.execute(insert(CreditLedger).values(
            user_id=overcharged, type="capture", amount=0, held_change=-15, balance_before=485, balance_after=485,
            reference="job-over", description="", idempotency_key="capture:job-over:1", created_at=utcnow()))
        session.execute(insert(CreditLedger).values(
            user_id=gapped, type="admin_grant", amount=10, held_change=0, balance_before=600, balance_after=610,
            description="", idempotency_key=f"admin_grant:gap:{gapped}", created_at=utcnow()))
        session.execute(update(CreditAccount).where(CreditAccount.user_id == gapped)
                        .values(available=510, lifetime_earned=510))

    result = invoke(private_app, "audit")
    assert result.exit_code == 1
    output = result.output
    assert f"[negative-balance] account {drifted}" in output
    assert f"[available-vs-ledger] account {drifted}: available -7 but the ledger sums to 500" in output
    assert f"[held-vs-ledger] account {overcharged}: held 0 but the ledger sums to -15" in output
    assert f"[overcharge] account {overcharged}, job job-over" in output
    assert "2 captures for 1 images" in output
    assert f"[balance-chain] account {gapped}" in output
    assert "key=capture:job-over:1" in output  # the entries involved are printed
    assert "discrepancies" in output
