"""A ComfyUI restarted mid-render forgets the prompt: it is submitted once more with the same seed
(``RENDER_RESUBMIT_LOST``), so the user gets what was paid for; without that it fails, refunded."""
from __future__ import annotations

from urllib.parse import urlparse

import pytest
import requests

from .conftest import Stack, User, _wait

pytestmark = pytest.mark.e2e
# Long enough for the emulator to come back on its port while the worker keeps reconnecting.
WORKER_ENV = {"RENDER_COMFYUI_RETRY_SECONDS": "30"}


@pytest.fixture(scope="module")
def pool(stack: Stack) -> Stack:
    stack.start_emulator("a")
    return stack


def restarted_mid_render(pool: Stack, user: User, **body) -> str:
    """Submit a job whose ComfyUI dies at the first sampler step and is started again on its port."""
    pool.configure("a", step_delay=0.05, faults={"crash": True})
    job_id = user.submit(**body)
    proc, url = pool.emulators.pop("a")
    proc.proc.wait(timeout=30)
    pool.start_emulator("a", port=urlparse(url).port)
    return job_id


def test_a_prompt_lost_to_a_comfyui_restart_is_submitted_once_more_with_the_same_seed(pool: Stack):
    pool.start_worker("w1", "a", **WORKER_ENV)
    user = pool.user()
    job_id = restarted_mid_render(pool, user, batchSize=2, steps=8)

    job = user.wait(job_id, 90)
    assert job["status"] == "succeeded", job["error"]
    job = _wait(lambda: (row := user.job(job_id))["settledAt"] and row, 10, "the settlement, just after the end")
    assert job["attempts"] == 1 and job["imagesDelivered"] == 2
    history = requests.get(pool.emulator_url("a") + f"/history/{job['comfyPromptId']}", timeout=5).json()
    graph = history[job["comfyPromptId"]]["prompt"][2]
    assert graph["3"]["inputs"]["seed"] == job["params"]["seed"], "the restarted ComfyUI ran the same graph"
    assert user.settles_at({"available": 470, "held": 0}), "charged once for what was delivered"
    assert sorted(kind for kind, *_ in user.ledger()) == ["capture", "hold", "signup_bonus"]
    pool.stop_worker("w1")


def test_without_resubmission_the_lost_prompt_fails_and_is_refunded(pool: Stack):
    pool.start_worker("w2", "a", RENDER_RESUBMIT_LOST="false", **WORKER_ENV)
    user = pool.user()
    job_id = restarted_mid_render(pool, user, steps=8)

    job = user.wait(job_id, 90)
    assert job["status"] == "failed" and job["error"]["code"] == "PROMPT_LOST", job["error"]
    assert user.settles_at({"available": 500, "held": 0})
    pool.stop_worker("w2")
