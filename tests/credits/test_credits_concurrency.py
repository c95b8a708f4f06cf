"""Races against the credits service under real gunicorn (2 processes × 16 threads), on each
backend: parallel admissions never overdraw, and a hold is settled exactly once whatever
mix of captures, releases and settlements arrives at the same time."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from shared.config import load_settings
from shared.db import Database
from shared.embedded import free_port
from shared.errors import ServiceError
from services.credits.audit import audit
from services.credits.client import CreditsClient
from services.credits.models import CreditHold, CreditLedger
from tests.conftest import TEST_SERVICE_TOKEN

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def start_gunicorn(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    """The credits app as production runs it; its output goes to ``log_path``."""
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", "2", "--threads", "16",
             "-b", f"127.0.0.1:{port}", "--log-level", "warning", "services.credits.app:create_app()"],
            cwd=PROJECT_ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"gunicorn did not start: {log_path.read_text()[-2000:]}")
        time.sleep(0.1)


def stop_gunicorn(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def gunicorn_env(database_url, redis_url, keys_dir, tmp_path_factory) -> dict[str, str]:
    return {"APP_ENV": "test", "DATA_DIR": str(tmp_path_factory.mktemp("gunicorn")), "DATABASE_URL": database_url,
            "REDIS_URL": redis_url, "SERVICE_TOKEN": TEST_SERVICE_TOKEN,
            "JWT_PRIVATE_KEY_PATH": str(keys_dir / "jwt_private.pem"),
            "JWT_PUBLIC_KEY_PATH": str(keys_dir / "jwt_public.pem")}


@pytest.fixture(scope="module")
def server(gunicorn_env):
    proc, url = start_gunicorn(gunicorn_env, Path(gunicorn_env["DATA_DIR"]) / "gunicorn.log")
    yield url
    stop_gunicorn(proc)


@pytest.fixture(scope="module")
def db(gunicorn_env):
    database = Database(load_settings(gunicorn_env).credits_database_url)
    yield database
    database.dispose()


@pytest.fixture
def remote(server):
    client = CreditsClient(server, TEST_SERVICE_TOKEN, timeout=60)
    yield client
    client.close()


def outcome(call) -> tuple[int, object]:
    try:
        return 200, call()
    except ServiceError as exc:
        return exc.status, exc.code


def test_two_hundred_parallel_admissions_take_exactly_what_is_available(remote, db, new_user_id):
    user_id = new_user_id()
    assert remote.open_account(user_id) == {"available": 500, "held": 0}
    jobs = [f"par-{user_id}-{index}" for index in range(200)]
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(lambda job: outcome(lambda: remote.hold(user_id, job, "text2img", 1)), jobs))
    assert Counter(status for status, _ in results) == {200: 33, 402: 167}
    assert {code for status, code in results if status == 402} == {"INSUFFICIENT_CREDITS"}
    assert remote.open_account(user_id) == {"available": 5, "held": 495}
    with db.read() as session:
        assert session.scalar(select(CreditLedger.balance_after).where(CreditLedger.user_id == user_id)
                              .order_by(CreditLedger.id.desc()).limit(1)) == 5
    assert [item.render() for item in audit(db)] == []


def test_parallel_first_calls_open_the_account_once(remote, db, new_user_id):
    user_id = new_user_id()
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda _: remote.open_account(user_id), range(16)))
    assert results == [{"available": 500, "held": 0}] * 16
    with db.read() as session:
        assert session.scalars(select(CreditLedger.type).where(CreditLedger.user_id == user_id)).all() == [
            "signup_bonus"]


def test_parallel_identical_admissions_and_captures_charge_once(remote, new_user_id):
    user_id = new_user_id()
    job = f"same-{user_id}"
    with ThreadPoolExecutor(max_workers=16) as pool:
        holds = list(pool.map(lambda _: remote.hold(user_id, job, "text2img", 2), range(16)))
        captures = list(pool.map(lambda _: remote.capture(job, f"capture:{job}:0"), range(16)))
    assert {hold["amount"] for hold in holds} == {30}
    assert captures == [{"jobId": job, "captured": 15, "remaining": 15}] * 16
    assert remote.open_account(user_id) == {"available": 470, "held": 15}


def test_racing_captures_and_releases_settle_a_hold_exactly_once(remote, db, new_user_id):
    rng = random.Random(4)
    for _round in range(3):
        user_id, job = new_user_id(), f"race-{uuid.uuid4().hex}"
        remote.hold(user_id, job, "text2img", 3)
        calls = ([lambda i=i: remote.capture(job, f"capture:{job}:{i}") for i in range(3) for _ in range(6)]
                 + [lambda k=k: remote.release(job, f"release:{job}:{k}") for k in range(6)])
        rng.shuffle(calls)
        with ThreadPoolExecutor(max_workers=24) as pool:
            results = list(pool.map(lambda call: outcome(call), calls))
        assert {code for status, code in results if status != 200} <= {"HOLD_SETTLED"}
        with db.read() as session:
            hold = session.get(CreditHold, job)
            rows = session.execute(select(CreditLedger.type, CreditLedger.held_change)
                                   .where(CreditLedger.reference == job)).all()
        captured = sum(-change for kind, change in rows if kind == "capture")
        assert (hold.status, hold.captured, hold.captured + hold.released) == ("settled", captured, 45)
        assert Counter(kind for kind, _ in rows)["release"] <= 1
        assert sum(change for _, change in rows) == 0
        assert remote.open_account(user_id) == {"available": 500 - captured, "held": 0}
    assert [item.render() for item in audit(db)] == []


def test_racing_settlements_and_captures_charge_the_delivered_images_once(remote, db, new_user_id):
    """The worker and the reconciler settle the same job while late captures of a previous
    worker arrive: the job ends charged for its delivered images exactly once."""
    rng = random.Random(7)
    for _round in range(3):
        user_id, job = new_user_id(), f"settle-{uuid.uuid4().hex}"
        remote.hold(user_id, job, "text2img", 3)
        calls = ([lambda: remote.settle(job, f"settle:{job}", 2) for _ in range(12)]
                 + [lambda i=i: remote.capture(job, f"capture:{job}:{i}") for i in range(2) for _ in range(3)])
        rng.shuffle(calls)
        with ThreadPoolExecutor(max_workers=24) as pool:
            results = list(pool.map(lambda call: outcome(call), calls))
        assert {code for status, code in results if status != 200} <= {"HOLD_SETTLED"}
        settlements = [result for status, result in results if status == 200 and "released" in result]
        assert len(settlements) == 12 and len({str(result) for result in settlements}) == 1
        with db.read() as session:
            hold = session.get(CreditHold, job)
        assert (hold.status, hold.captured, hold.released) == ("settled", 30, 15)
        assert remote.open_account(user_id) == {"available": 470, "held": 0}
    assert [item.render() for item in audit(db)] == []
