"""The scheduler process with real workers: a light user is not stuck behind a heavy user's
backlog, a waiting job cancelled never runs, and jobs go to the worker that holds their model."""
from __future__ import annotations

import pytest

from .conftest import MODEL, Stack, _wait

pytestmark = pytest.mark.e2e
OTHER = "sdxl_demo.safetensors"


@pytest.fixture(scope="module")
def pool(stack: Stack) -> Stack:
    stack.start_emulator("a")
    stack.configure("a", step_delay=0.1)
    stack.start_worker("w1", "a")
    return stack


def _started(user, job_id: str) -> str:
    return user.wait(job_id, 60)["startedAt"]


def test_a_light_user_is_not_stuck_behind_a_heavy_users_backlog(pool: Stack):
    heavy, light = pool.user(), pool.user()
    backlog = [heavy.submit(steps=10) for _ in range(4)]  # two run on the worker, two wait
    _wait(lambda: heavy.job(backlog[1])["status"] == "running", 15, "the worker's two slots to fill")
    waiting = light.submit(steps=10)
    assert light.job(waiting)["queuePosition"] <= 1
    assert _started(light, waiting) < _started(heavy, backlog[3]), "the light user's job came before the backlog's end"
    assert [heavy.wait(job_id, 30)["status"] for job_id in backlog] == ["succeeded"] * 4


def test_a_cancelled_waiting_job_never_runs_and_is_refunded(pool: Stack):
    user = pool.user()
    jobs = [user.submit(steps=10) for _ in range(4)]
    assert user.cancel(jobs[3]).json()["data"]["status"] == "cancelled"
    assert [user.wait(job_id, 30)["status"] for job_id in jobs[:3]] == ["succeeded"] * 3
    assert user.job(jobs[3])["startedAt"] is None and user.job(jobs[3])["attempts"] == 0
    assert user.settles_at({"available": 500 - 3 * 15, "held": 0})


def test_jobs_for_a_model_go_to_the_worker_that_holds_it(pool: Stack):
    pool.start_emulator("b")
    pool.configure("b", step_delay=0.1)
    pool.start_worker("w2", "b")  # serving: its heartbeat told the scheduler, whose next pass plans with it
    try:
        user = pool.user()
        first = [user.wait(user.submit(steps=5, model=model), 30) for model in (MODEL, OTHER)]
        holder = {job["params"]["model"]: job["worker"] for job in first}
        assert holder[MODEL] != holder[OTHER]
        later = [user.submit(steps=5, model=model) for model in (OTHER, MODEL, OTHER, MODEL)]
        for job_id in later:
            job = user.wait(job_id, 30)
            assert job["status"] == "succeeded" and job["worker"] == holder[job["params"]["model"]]
    finally:
        pool.stop_worker("w2")
