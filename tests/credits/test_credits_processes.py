"""The credits processes beside the web app start as the launcher starts them
(``python -m services.credits.sweeper``, ``python -m services.credits.events``) and do their work."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Callable

import pytest
from sqlalchemy import update

from shared.config import PROJECT_ROOT
from shared.db import utcnow
from shared.events import PLATFORM_STREAM, redis_client
from services.credits.models import CreditAccount, CreditHold


def run_until(module: str, env: dict[str, str], done: Callable[[], bool], log: Path) -> None:
    """Run ``python -m module`` until ``done()`` (failing the test if it exits or takes
    longer than a generous minute), then stop it."""
    with log.open("w") as output:
        proc = subprocess.Popen([sys.executable, "-m", module], cwd=PROJECT_ROOT, env=env,
                                stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not done():
            if proc.poll() is not None:
                pytest.fail(f"{module} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{module} did not do its work in time:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def process_env(settings, settings_env) -> dict[str, str]:
    """What the launcher gives a process: the test's settings (``settings`` made the keys)."""
    return {"PATH": os.environ.get("PATH", ""), **settings_env, "CREDITS_SWEEP_INTERVAL_SECONDS": "1"}


def test_the_sweeper_process_releases_an_expired_hold(credits, process_env, new_user_id, job_id, tmp_path):
    user_id = new_user_id()
    credits.hold(user_id, job_id, "text2img", 2)  # the render domain (fake_peers) does not know the job
    with credits.db.transaction() as session:
        session.execute(update(CreditHold).where(CreditHold.job_id == job_id)
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
    run_until("services.credits.sweeper", process_env, lambda: credits.balance(user_id).held == 0,
              tmp_path / "sweeper.log")
    assert credits.balance(user_id).to_dict() == {"available": 500, "held": 0}


def test_the_events_process_closes_the_account_of_a_deleted_user(credits, process_env, redis_url, new_user_id,
                                                                  job_id, tmp_path):
    user_id = new_user_id()
    credits.hold(user_id, job_id, "text2img", 1)

    def closed() -> bool:
        with credits.db.read() as session:
            return session.get(CreditAccount, user_id).closed_at is not None

    client = redis_client(redis_url)
    try:
        client.xadd(PLATFORM_STREAM, {"type": "user.deleted", "userId": str(user_id), "ts": "0"})
        run_until("services.credits.events", process_env, closed, tmp_path / "events.log")
    finally:
        client.close()
    assert credits.balance(user_id).to_dict() == {"available": 500, "held": 0}
