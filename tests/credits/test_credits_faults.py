"""Faults: a database error in the middle of a movement leaves nothing written; ledger rows
cannot be rewritten by any path; bad configuration stops start-up."""
from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta
from unittest.mock import patch

import pytest
from sqlalchemy import bindparam, delete, event, select, text, update

from shared.config import ConfigError
from shared.db import utcnow
from services.credits.app import create_app
from services.credits.config import load_config
from services.credits.ledger import Transaction
from services.credits.models import CreditAccount, CreditHold, CreditLedger, LedgerImmutable, RedeemCode


class InjectedFault(RuntimeError):
    pass


@contextmanager
def failing_after_ledger_insert(engine):
    """The database 'fails' right after the ledger row was inserted, inside the transaction,
    whether the INSERT ran through SQLAlchemy or on the driver's cursor (``ledger.Prepared``)."""
    def check(statement: str) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO CREDIT_LEDGER"):
            raise InjectedFault("disk full")

    def fail(_conn, _cursor, statement, *_args):
        check(statement)

    run_prepared = Transaction._run

    def run_then_fail(tx, prepared, parameters, many):
        cursor = run_prepared(tx, prepared, parameters, many)
        check(prepared.sql)
        return cursor

    event.listen(engine, "after_cursor_execute", fail)
    try:
        with patch.object(Transaction, "_run", run_then_fail):
            yield
    finally:
        event.remove(engine, "after_cursor_execute", fail)


def snapshot(credits, user_id, job_id):
    with credits.db.read() as session:
        account = session.get(CreditAccount, user_id)
        hold = session.get(CreditHold, job_id)
        return ((account.available, account.held, account.lifetime_earned, account.lifetime_spent) if account else None,
                (hold.captured, hold.released, hold.status) if hold else None,
                session.scalar(select(CreditLedger.id).where(CreditLedger.user_id == user_id)
                               .order_by(CreditLedger.id.desc()).limit(1)))


@pytest.mark.parametrize("movement", ["open", "hold", "capture", "release", "expire", "grant", "deduct", "redeem",
                                      "bonus"])
def test_a_failure_after_the_ledger_insert_leaves_nothing_half_written(credits, adjustments, redeem_codes, new_user_id,
                                                                       job_id, movement):
    user_id = new_user_id()
    code = redeem_codes.create(amount=5, max_uses=3, operator_id=1).code
    if movement == "bonus":  # an account without its bonus row, as the original's were
        with credits.db.transaction() as session:
            session.add(CreditAccount(user_id=user_id, available=0, held=0, lifetime_earned=0, lifetime_spent=0))
    elif movement != "open":
        credits.open_account(user_id)
    if movement in ("capture", "release", "expire"):
        credits.hold(user_id, job_id, "text2img", 2)
    run = {
        "open": lambda: credits.open_account(user_id),
        "hold": lambda: credits.hold(user_id, job_id, "text2img", 2),
        "capture": lambda: credits.capture(job_id, f"capture:{job_id}:0"),
        "release": lambda: credits.release(job_id, f"release:{job_id}"),
        "expire": lambda: credits.expire_hold(job_id, now=utcnow() + timedelta(days=365)),
        "grant": lambda: adjustments.grant(user_id, 10, "r", operator_id=1),
        "deduct": lambda: adjustments.deduct(user_id, 10, "r", operator_id=1),
        "redeem": lambda: redeem_codes.redeem(user_id, code),
        "bonus": lambda: credits.grant_signup_bonuses([new_user_id(), user_id]),
    }[movement]
    before = snapshot(credits, user_id, job_id)
    with credits.db.read() as session:
        uses_before = session.get(RedeemCode, code).uses

    with failing_after_ledger_insert(credits.db.engine), pytest.raises(InjectedFault):
        run()

    assert snapshot(credits, user_id, job_id) == before
    with credits.db.read() as session:
        assert session.get(RedeemCode, code).uses == uses_before
    run()  # and the same movement then goes through once
    assert snapshot(credits, user_id, job_id) != before


def test_ledger_rows_cannot_be_updated_or_deleted(credits, new_user_id):
    user_id = new_user_id()
    credits.open_account(user_id)
    attempts = [
        lambda s: setattr(s.scalars(select(CreditLedger).where(CreditLedger.user_id == user_id)).one(), "amount", 5000),
        lambda s: s.delete(s.scalars(select(CreditLedger).where(CreditLedger.user_id == user_id)).one()),
        lambda s: s.execute(update(CreditLedger).where(CreditLedger.user_id == user_id).values(amount=5000)),
        lambda s: s.execute(delete(CreditLedger).where(CreditLedger.user_id == user_id)),
        lambda s: s.execute(text("UPDATE credit_ledger SET amount = 5000 WHERE user_id = :u"), {"u": user_id}),
        lambda s: s.execute(text("delete from credit_ledger where user_id = :u"), {"u": user_id}),
    ]
    for attempt in attempts:
        with pytest.raises(LedgerImmutable):
            with credits.db.transaction() as session:
                attempt(session)
                session.flush()
    with credits.db.read() as session:
        assert session.scalars(select(CreditLedger.amount).where(CreditLedger.user_id == user_id)).all() == [500]


def test_the_movements_prepared_statements_cannot_rewrite_the_ledger_either(credits, new_user_id):
    """The movements' statements run on the driver's cursor, past the engine's guard: a
    statement that would update or delete ledger rows is refused when it is compiled."""
    user_id = new_user_id()
    credits.open_account(user_id)
    rewrite = update(CreditLedger).where(CreditLedger.user_id == bindparam("p_user_id")).values(amount=5000)
    with pytest.raises(LedgerImmutable):
        credits.ledger.unit_of_work(lambda tx: tx.write(rewrite, {"p_user_id": user_id}))
    with credits.db.read() as session:
        assert session.scalars(select(CreditLedger.amount).where(CreditLedger.user_id == user_id)).all() == [500]


@pytest.mark.parametrize("env, message", [
    ({"CREDITS_PRICING": "{text2img: 15}"}, "JSON object"),
    ({"CREDITS_PRICING": "[15]"}, "non-empty JSON object"),
    ({"CREDITS_PRICING": '{"text2img": 0}'}, "integer from 1"),
    ({"CREDITS_PRICING": '{"text2img": 1.5}'}, "integer from 1"),
    ({"CREDITS_PRICING": '{"text2img": "15"}'}, "integer from 1"),
    ({"CREDITS_TIMEZONE": "Mars/Olympus"}, "time zone"),
    ({"CREDITS_HOLD_TTL_SECONDS": "soon"}, "integer"),
    ({"CREDITS_HOLD_TTL_SECONDS": "0"}, "positive"),
])
def test_bad_configuration_stops_start_up(settings, env, message):
    with pytest.raises(ConfigError, match=message):
        load_config(settings, env)


def test_configuration_is_typed_with_defaults(settings):
    config = load_config(settings, {"CREDITS_PRICING": '{"text2img": 20, "upscale": 5}'})
    assert config.pricing == {"text2img": 20, "upscale": 5}
    assert config.hold_ttl.total_seconds() == 2 * settings.job_deadline_seconds
    assert config.timezone.key == "Asia/Shanghai"


def test_the_app_refuses_to_start_on_bad_pricing(settings, monkeypatch):
    monkeypatch.setenv("CREDITS_PRICING", "not json")
    with pytest.raises(ConfigError):
        create_app(settings)


def test_a_movement_on_a_lost_connection_runs_again_once(credits, new_user_id, db_backend, database_url):
    """No ping before each transaction: a connection the server dropped fails the first try,
    the unit of work runs again on a fresh one, and the ledger records the hold once."""
    if db_backend != "mariadb":
        pytest.skip("only a server connection can be lost")
    from sqlalchemy import func

    from tests.shared.test_db import _kill_connections

    user_id = new_user_id()
    credits.open_account(user_id)
    engine = credits.db.engine
    with engine.connect() as probe:
        pooled = [probe.scalar(text("SELECT CONNECTION_ID()"))]
    _kill_connections(database_url, pooled)
    job = f"lost-{user_id}"
    result = credits.hold(user_id, job, "text2img", 1, "after a lost connection")
    assert result.created and result.balance.held == result.amount
    with credits.db.read() as session:
        rows = session.scalar(select(func.count()).select_from(CreditLedger)
                              .where(CreditLedger.idempotency_key == f"hold:{job}"))
    assert rows == 1
