"""ComfyUI misbehaving: each case ends in a clear outcome and the right refund, never a hang."""
from __future__ import annotations

from dataclasses import asdict

import pytest
import requests

from services.comfyui_emulator.config import Faults

from .conftest import Stack, _wait

pytestmark = pytest.mark.e2e
WORKER_ENV = {"JOB_DEADLINE_SECONDS": "4", "RENDER_COMFYUI_RETRY_SECONDS": "2"}
RESET = asdict(Faults())  # every fault disarmed, as the emulator starts


@pytest.fixture(scope="module")
def pool(stack: Stack) -> Stack:
    stack.start_emulator("a")
    stack.start_worker("w1", "a", **WORKER_ENV)
    return stack


@pytest.fixture
def faults(pool: Stack):
    yield lambda **armed: pool.configure("a", faults=armed)
    pool.configure("a", faults=RESET, checkpoints=["sd15_demo.safetensors", "sdxl_demo.safetensors"])


def failed_with(user, job_id: str, code: str, error_class: str = "system") -> dict:
    job = user.wait(job_id, 30)
    assert job["status"] == "failed", job
    assert job["error"]["code"] == code and job["error"]["class"] == error_class, job["error"]
    assert job["error"]["message"]
    # The row turns final first, then the worker releases the hold (the job.failed event follows).
    _wait(lambda: user.balance() == {"available": 500, "held": 0}, 5, "a failed job to be refunded in full")
    return job


def test_validation_error_at_submit_is_a_user_error_naming_the_node(pool: Stack, faults):
    faults()
    pool.configure("a", checkpoints=["other.safetensors"])  # the catalog still lists the old name for a while
    user = pool.user()
    job = failed_with(user, user.submit(), "PROMPT_REJECTED", "user")
    assert "node 4 (CheckpointLoaderSimple)" in job["error"]["message"]


def test_execution_error_fails_with_comfyuis_message(pool: Stack, faults):
    faults(execution_error="CUDA out of memory")
    user = pool.user()
    job = failed_with(user, user.submit(batchSize=2), "EXECUTION_ERROR")
    assert "CUDA out of memory" in job["error"]["message"]


def test_comfyui_answering_html_fails_after_retrying(pool: Stack, faults):
    faults(reject_with_html=True, persistent=True)
    user = pool.user()
    job = failed_with(user, user.submit(), "COMFYUI_UNAVAILABLE")
    assert "502" in job["error"]["message"] and "text/html" in job["error"]["message"]


def test_html_once_is_retried_and_succeeds(pool: Stack, faults):
    faults(reject_with_html=True)
    user = pool.user()
    assert user.wait(user.submit())["status"] == "succeeded"


@pytest.mark.parametrize("fault", ["truncate_history", "lose_history"])
def test_unreadable_or_lost_history_falls_back_to_the_executed_messages(pool: Stack, faults, fault):
    faults(**{fault: True, "persistent": True})
    user = pool.user()
    job = user.wait(user.submit(batchSize=2))
    assert job["status"] == "succeeded" and job["imagesDelivered"] == 2
    assert user.balance() == {"available": 470, "held": 0}


def test_view_404_fails_the_job_and_charges_nothing(pool: Stack, faults):
    faults(view_not_found=True, persistent=True)
    user = pool.user()
    job = failed_with(user, user.submit(batchSize=2), "OUTPUT_MISSING")
    assert job["imagesDelivered"] == 0


def test_a_dropped_socket_is_reconnected_and_the_job_finishes(pool: Stack, faults):
    faults(drop_socket_after_steps=2)
    user = pool.user()
    job = user.wait(user.submit(steps=8))
    assert job["status"] == "succeeded" and job["imagesDelivered"] == 1


def test_a_prompt_that_never_finishes_is_stopped_at_the_deadline(pool: Stack, faults):
    faults(hang=True)
    user = pool.user()
    job = failed_with(user, user.submit(), "DEADLINE_EXCEEDED")

    def queue_empty() -> bool:  # ComfyUI stops a running node at its next check of the interrupt flag
        queue = requests.get(pool.emulator_url("a") + "/queue", timeout=5).json()
        return queue["queue_running"] == [] and queue["queue_pending"] == []

    _wait(queue_empty, 30, "the prompt to be interrupted")
    history = requests.get(pool.emulator_url("a") + f"/history/{job['comfyPromptId']}", timeout=5).json()
    assert history[job["comfyPromptId"]]["status"]["messages"][-1][0] == "execution_interrupted"


def test_comfyui_crashing_mid_render_fails_the_job_as_a_system_error(pool: Stack):
    pool.configure("a", faults={"crash": True})
    user = pool.user()
    failed_with(user, user.submit(), "COMFYUI_UNAVAILABLE")
    proc, url = pool.emulators.pop("a")
    proc.proc.wait(timeout=5)
    _wait(lambda: pool.catalog_of("w1") is None, 30, "the worker to stop advertising a dead ComfyUI")
