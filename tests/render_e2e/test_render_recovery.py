"""Crashes: a worker SIGKILLed mid-render, and Redis restarted (empty) with jobs queued."""
from __future__ import annotations

import signal

import pytest
import requests

from .conftest import Stack, _wait

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pool(stack: Stack) -> Stack:
    stack.start_emulator("a")
    stack.start_emulator("b")
    stack.configure("a", step_delay=0.1)
    stack.configure("b", step_delay=0.1)
    stack.start_worker("w1", "a")
    stack.start_worker("w2", "b")
    return stack


def test_a_worker_killed_mid_render_leaves_its_job_to_be_finished_once(pool: Stack):
    """The dead worker's unacknowledged message goes back (on Redis after the visibility timeout)
    to its own queue, which no later start reads (its expiry: tests/render/test_scheduler.py): the
    reconciler alone takes the job back, and another worker runs it to the end once."""
    user = pool.user()
    job_ids = [user.submit(batchSize=2, steps=30) for _ in range(2)]
    victim_job = _wait(lambda: next((user.job(j) for j in job_ids if user.job(j)["progress"] > 0), None),
                       15, "a job to make progress")
    victim = pool.name_of(victim_job["worker"])
    pool.workers[victim].kill(signal.SIGKILL)
    pool.workers.pop(victim)

    finished = [user.wait(job_id, 45) for job_id in job_ids]
    assert [job["status"] for job in finished] == ["succeeded", "succeeded"]
    redone = next(job for job in finished if job["id"] == victim_job["id"])
    assert redone["attempts"] == 2 and pool.name_of(redone["worker"]) != victim
    assert [o["index"] for o in redone["outputs"]] == [0, 1]
    assert user.settles_at({"available": 440, "held": 0}), "every image charged exactly once"
    ledger = [kind for kind, *_ in user.ledger()]
    assert ledger.count("hold") == 2 and ledger.count("capture") == 2, "one settlement per job"
    pool.start_worker(victim, "a" if victim == "w1" else "b")


def test_jobs_queued_when_redis_restarts_empty_are_found_and_run(pool: Stack):
    users = [pool.user(), pool.user()]
    jobs = [(user, user.submit(steps=25)) for user in users for _ in range(3)]  # 6 jobs, 4 prompt slots
    _wait(lambda: sum(u.job(j)["status"] == "running" for u, j in jobs) == 4, 15, "four jobs to start")
    queued = [(u, j) for u, j in jobs if u.job(j)["status"] == "queued"]
    assert len(queued) == 2
    pool.redis.stop()
    pool.redis.start(fresh=True)  # a new, empty data folder: every queue message is gone
    finished = [user.wait(job_id, 60) for user, job_id in jobs]
    assert [job["status"] for job in finished] == ["succeeded"] * 6, [job["error"] for job in finished]
    for user in users:
        assert user.settles_at({"available": 500 - 3 * 15, "held": 0})
    _wait(lambda: len(requests.get(pool.gateway("/api/models"), timeout=5).json()["data"]["workers"]) == 2,
          20, "both workers to publish their catalogs again")
