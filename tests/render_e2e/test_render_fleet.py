"""Three GPU hosts on one machine: each a ComfyUI emulator and a render worker of its own
(separate processes, own names and ports). One host is taken away by SIGTERM mid-run (its
jobs finish or move to another host: none lost, none charged twice), and a new host joins
and takes work."""
from __future__ import annotations

import signal
import time
from datetime import datetime

import pytest

from .conftest import Stack, User, _wait

pytestmark = pytest.mark.e2e
# A short drain, so the host taken away both finishes jobs and hands some back.
HOST_ENV = {"RENDER_DRAIN_SECONDS": "1"}
PRICE = 15


def _add_host(stack: Stack, name: str) -> None:
    stack.start_emulator(name)
    stack.configure(name, step_delay=0.05)
    stack.start_worker(name, name, **HOST_ENV)


def _assert_charged_once(users: list[User], jobs_of: dict[int, list[str]]) -> None:
    """Every job succeeded; each user paid exactly one price per image, held nothing, and the
    ledger has one hold and one capture per job (batch 1)."""
    for user in users:
        finished = [user.wait(job_id, 90) for job_id in jobs_of[user.id]]
        assert [job["status"] for job in finished] == ["succeeded"] * len(finished), finished
        assert user.settles_at({"available": 500 - PRICE * len(finished), "held": 0}, timeout=30)
        kinds = [kind for kind, *_ in user.ledger()]
        assert kinds.count("hold") == len(finished) and kinds.count("capture") == len(finished), kinds


def test_three_hosts_one_taken_away_and_one_added(stack: Stack):
    for name in ("h1", "h2", "h3"):
        _add_host(stack, name)
    users = [stack.user() for _ in range(3)]
    jobs_of = {user.id: [user.submit(steps=20) for _ in range(4)] for user in users}  # ~1 s each, 12 jobs

    def running_on(host: str) -> list[str]:
        return [job_id for user in users for job_id in jobs_of[user.id]
                if (job := user.job(job_id))["status"] == "running" and stack.name_of(job["worker"]) == host]

    _wait(lambda: running_on("h2"), 30, "h2 to run a job")
    stack.workers["h2"].send(signal.SIGTERM)
    _wait(lambda: stack.workers["h2"].proc.poll() is not None, 30, "h2 to drain and exit")
    assert stack.workers.pop("h2").proc.returncode == 0

    _assert_charged_once(users, jobs_of)
    workers = {stack.name_of(user.job(job_id)["worker"]) for user in users for job_id in jobs_of[user.id]}
    assert {"h1", "h3"} <= workers, "the remaining hosts shared the work"

    # A fourth host joins; the next wave of jobs reaches it.
    _add_host(stack, "h4")
    joined = time.time()
    second = [stack.user() for _ in range(3)]
    jobs_of.update({user.id: [user.submit(steps=20) for _ in range(4)] for user in second})
    _assert_charged_once(second, jobs_of)
    on_h4 = [user.job(job_id) for user in second for job_id in jobs_of[user.id]
             if stack.name_of(user.job(job_id)["worker"]) == "h4"]
    assert on_h4, "the new host took work"
    first_start = min(datetime.fromisoformat(job["startedAt"].rstrip("Z") + "+00:00").timestamp() for job in on_h4)
    print(f"h4 ran {len(on_h4)} of 12 jobs; its first started {first_start - joined:.2f} s after it joined "
          f"(heartbeat {stack.env['RENDER_HEARTBEAT_SECONDS']} s)")

    # h2 comes back under its own name and is listed active again.
    stack.start_emulator("h2b")
    stack.start_worker("h2", "h2b", **HOST_ENV)
    for name in ("h1", "h3", "h4", "h2"):
        stack.stop_worker(name)
