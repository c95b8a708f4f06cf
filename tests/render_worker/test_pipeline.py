"""render_job end to end: emulator + real credits service + real Redis + real database."""
from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
from sqlalchemy import text

from services.render import jobs
from services.render_worker.pipeline import RenderContext, build_context, render_job
from services.render.workflows import validate_params
from shared.events import redis_client, user_channel

from tests.render_fixtures import MODEL


@pytest.fixture
def ctx(render_settings, render_config):
    context = build_context(render_settings, replace(render_config, comfyui_retry_seconds=1.0), "render@test")
    yield context
    context.comfyui.close()
    context.credits.close()
    context.db.dispose()


@pytest.fixture
def user_id(ctx) -> int:
    user = random.randint(10**6, 10**9)
    assert ctx.credits.open_account(user) == {"available": 500, "held": 0}
    return user


@pytest.fixture
def channel(render_settings, user_id):
    """Collects the user's live events (subscribed before the job runs)."""
    pubsub = redis_client(render_settings.redis_url).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(user_channel(user_id))
    pubsub.get_message(timeout=1)

    def drain() -> list[dict]:
        events = []
        while (message := pubsub.get_message(timeout=0.5)) is not None:
            events.append(json.loads(message["data"]))
        return events

    yield drain
    pubsub.close()


def admit(ctx: RenderContext, user_id: int, **raw) -> str:
    """What the gateway does at admission: validate, hold, insert."""
    template = ctx.templates.get("text2img")
    params = validate_params(template, {"prompt": "a lighthouse", "model": MODEL, "width": 64, "height": 64,
                                        "steps": 5, **raw})
    job_id = jobs.new_job_id()
    hold = ctx.credits.hold(user_id, job_id, "text2img", params["batchSize"], "test")
    with ctx.db.transaction() as session:
        jobs.create_job(session, job_id=job_id, user_id=user_id, template=template, params=params,
                        price_per_image=hold["pricePerImage"], queue="render.text2img")
    return job_id


def job_state(ctx: RenderContext, job_id: str):
    with ctx.db.transaction() as session:
        job = jobs.get_job(session, job_id)
        return job, jobs.outputs_of(session, [job_id])[job_id]


def ledger(ctx: RenderContext, user_id: int) -> list[tuple[str, int, int]]:
    with ctx.db.engine.connect() as connection:
        rows = connection.execute(text("SELECT type, amount, held_change FROM credit_ledger WHERE user_id = :u "
                                       "ORDER BY id"), {"u": user_id})
        return [tuple(row) for row in rows]


def test_two_image_job_succeeds_charges_30_and_announces_in_order(ctx, user_id, channel):
    job_id = admit(ctx, user_id, batchSize=2)
    render_job(job_id, ctx)

    job, outputs = job_state(ctx, job_id)
    assert job.status == "succeeded" and job.progress == 100 and job.images_delivered == 2 and job.attempts == 1
    assert job.comfy_prompt_id and job.worker == "render@test" and job.error_code is None
    assert [output.index for output in outputs] == [0, 1]
    for output in outputs:
        assert ctx.storage.exists(output.image_key) and ctx.storage.exists(output.thumbnail_key)
        assert output.image_key.startswith("images/") and output.thumbnail_key.startswith("thumbs/")
        assert (output.width, output.height) == (64, 64) and output.file_size > 0 and len(output.sha256) == 64
    assert ctx.credits.open_account(user_id) == {"available": 470, "held": 0}
    assert [row[0] for row in ledger(ctx, user_id)] == ["signup_bonus", "hold", "capture", "capture"]

    events = [event for event in channel() if event["data"].get("jobId") == job_id]
    kinds = [event["type"] for event in events]
    assert kinds[0] == "job.started" and kinds[-3:] == ["job.image", "job.image", "job.succeeded"]
    assert set(kinds[1:-3]) == {"job.progress"}
    progress = [event["data"] for event in events if event["type"] == "job.progress"]
    assert progress[-1]["step"] == progress[-1]["totalSteps"] == 5 and 0 < progress[-1]["percent"] < 100
    assert [p["percent"] for p in progress] == sorted(p["percent"] for p in progress)
    assert events[-1]["data"] == {"jobId": job_id, "images": 2, "charged": 30}
    assert events[-2]["data"]["imageUrl"].startswith(ctx.storage.url(outputs[1].image_key) + "?exp=")


def test_execution_error_fails_the_job_and_refunds_everything(ctx, user_id, channel, emulator_faults,
                                                               notifications):
    emulator_faults(execution_error="sampler exploded (injected)")
    job_id = admit(ctx, user_id, batchSize=2)
    render_job(job_id, ctx)

    job, outputs = job_state(ctx, job_id)
    assert job.status == "failed" and outputs == [] and job.images_delivered == 0
    assert job.error_code == "EXECUTION_ERROR" and job.error_class == "system"
    assert "sampler exploded" in job.error_message
    assert ctx.credits.open_account(user_id) == {"available": 500, "held": 0}
    failed = [event for event in channel() if event["type"] == "job.failed"]
    assert failed[-1]["data"]["refunded"] == 30 and failed[-1]["data"]["errorClass"] == "system"
    notice = notifications[1][-1]
    assert notice["userId"] == user_id and notice["type"] == "job.failed"
    assert notice["data"]["jobId"] == job_id and notice["dedupeKey"] == f"job.failed:{job_id}"


def test_a_model_no_worker_can_serve_fails_and_refunds(ctx, user_id):
    job_id = admit(ctx, user_id)
    with ctx.db.transaction() as session:
        jobs.get_job(session, job_id).params = {**jobs.get_job(session, job_id).params, "model": "gone.safetensors"}
    render_job(job_id, ctx)
    job, _ = job_state(ctx, job_id)
    assert (job.status, job.error_code, job.error_class) == ("failed", "MODEL_UNAVAILABLE", "system")
    assert "gone.safetensors" in job.error_message
    assert ctx.credits.open_account(user_id)["available"] == 500


def test_redelivery_charges_once_and_skips_a_finished_job(ctx, user_id):
    job_id = admit(ctx, user_id, batchSize=2)
    render_job(job_id, ctx)
    render_job(job_id, ctx)
    job, outputs = job_state(ctx, job_id)
    assert job.status == "succeeded" and len(outputs) == 2 and job.attempts == 1
    assert ctx.credits.open_account(user_id) == {"available": 470, "held": 0}


def test_redelivered_running_job_runs_again_without_double_charging(ctx, user_id):
    """A worker died mid-job: the row says running on a dead worker and images were already captured."""
    job_id = admit(ctx, user_id, batchSize=2)
    render_job(job_id, ctx)
    with ctx.db.transaction() as session:
        session.execute(text("UPDATE render_jobs SET status = 'running', finished_at = NULL, worker = 'dead@x' "
                             "WHERE id = :id"), {"id": job_id})
    render_job(job_id, ctx)
    job, outputs = job_state(ctx, job_id)
    assert job.status == "succeeded" and job.attempts == 2 and len(outputs) == 2
    assert ctx.credits.open_account(user_id) == {"available": 470, "held": 0}


def test_a_running_job_of_a_live_worker_is_not_taken_over(ctx, user_id):
    job_id = admit(ctx, user_id)
    ctx.events.redis.set("render:alive:busy@x", "1", ex=30)
    with ctx.db.transaction() as session:
        session.execute(text("UPDATE render_jobs SET status = 'running', worker = 'busy@x', attempts = 1 "
                             "WHERE id = :id"), {"id": job_id})
    render_job(job_id, ctx)
    job, outputs = job_state(ctx, job_id)
    assert (job.status, job.worker, job.attempts, outputs) == ("running", "busy@x", 1, [])
    ctx.events.redis.delete("render:alive:busy@x")


def test_cancel_requested_while_running_stops_and_refunds(ctx, user_id, channel):
    job_id = admit(ctx, user_id, steps=100)
    original = ctx.comfyui.run

    def run_and_cancel(*args, hooks, **kwargs):
        report = hooks.on_progress

        def progress(step, total, percent):
            report(step, total, percent)
            if step == 3:
                with ctx.db.transaction() as session:
                    assert jobs.request_cancel(session, job_id) == "requested"
        hooks.on_progress = progress
        return original(*args, hooks=hooks, **kwargs)

    ctx.comfyui.run = run_and_cancel
    render_job(job_id, ctx)
    job, outputs = job_state(ctx, job_id)
    assert job.status == "cancelled" and outputs == []
    assert ctx.credits.open_account(user_id) == {"available": 500, "held": 0}
    assert [event["data"] for event in channel() if event["type"] == "job.cancelled"] == [
        {"jobId": job_id, "refunded": 15, "images": 0, "charged": 0}]
