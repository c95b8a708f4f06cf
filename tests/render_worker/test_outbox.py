"""A finished job's outbox: what credits or Redis did not take when the job ended is kept on the
job and finished by the reconciler, so a delivered image is charged once, an undelivered one
never, and the user always hears how the job ended."""
from __future__ import annotations

import time
from dataclasses import replace

import pytest
from flask import Flask
from sqlalchemy import text

from services.render.catalog import alive_key, catalog_key, publish_catalog
from services.render_worker.pipeline import build_context, render_job
from services.render_worker.reconciler import Reconciler
from shared.embedded import free_port

from tests.conftest import serve

from tests.render_worker.helpers import admit, job_state, ledger


@pytest.fixture
def unreachable() -> str:
    """An address where nothing listens: a service that is down."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def worker_without_credits(render_settings, render_config, unreachable):
    """A worker whose credits calls get no answer (retried for half a second)."""
    context = build_context(replace(render_settings, credits_url=f"http://{unreachable}"),
                            replace(render_config, comfyui_retry_seconds=1.0, credits_retry_seconds=0.5),
                            "render@no-credits")
    yield context
    context.comfyui.close()
    context.db.dispose()


@pytest.fixture
def worker_with_older_credits(render_settings, render_config):
    """A worker whose credits is a version without the settle route (a rolling upgrade that
    reached the workers first): every call is a plain 404 NOT_FOUND, as Flask answers one."""
    older = Flask("older-credits")

    @older.route("/<path:anything>", methods=["GET", "POST"])
    def unknown_route(anything):
        return {"success": False, "error": {"code": "NOT_FOUND", "message": "Not found.", "details": {}}}, 404

    server = serve(older)
    context = build_context(replace(render_settings, credits_url=server.url),
                            replace(render_config, credits_retry_seconds=0.5), "render@older-credits")
    yield context
    context.comfyui.close()
    context.db.dispose()
    server.stop()


@pytest.fixture
def reconciler(render_settings, render_config):
    """The reconciler process's pass, with credits and Redis answering again."""
    context = build_context(render_settings, replace(render_config, no_worker_grace_seconds=0.2),
                            "reconciler@test", credits_retry_seconds=0)
    yield Reconciler(context)
    context.db.dispose()


def job_events(events: list[dict], job_id: str) -> list[dict]:
    return [event for event in events if event["data"].get("jobId") == job_id]


def finished_long_ago(ctx, job_id: str) -> None:
    """Past the margin the reconciler leaves a finishing worker to empty its own outbox."""
    with ctx.db.transaction() as session:
        session.execute(text("UPDATE render_jobs SET finished_at = :at WHERE id = :id"),
                        {"at": job_state(ctx, job_id)[0].finished_at.replace(year=2000), "id": job_id})


def test_a_credits_outage_delivers_the_images_and_the_reconciler_charges_them_once(
        ctx, user_id, channel, worker_without_credits, reconciler):
    job_id = admit(ctx, user_id, batchSize=2)
    render_job(job_id, worker_without_credits)

    job, outputs = job_state(ctx, job_id)
    assert (job.status, job.images_delivered, len(outputs)) == ("succeeded", 2, 2)
    assert job.settled_at is None and job.announced_at is not None, "owes its settlement, not its event"
    assert ctx.credits.open_account(user_id) == {"available": 470, "held": 30}
    assert [kind for kind, *_ in ledger(ctx, user_id)] == ["signup_bonus", "hold"]
    final = [event["data"] for event in channel() if event["type"] == "job.succeeded"]
    assert final == [{"jobId": job_id, "images": 2, "charged": 30, "refunded": 0, "settled": False}]

    finished_long_ago(ctx, job_id)
    reconciler.run_once()
    assert job_state(ctx, job_id)[0].settled_at is not None
    assert ctx.credits.open_account(user_id) == {"available": 470, "held": 0}
    assert ledger(ctx, user_id)[1:] == [("hold", -30, 30), ("capture", 0, -30)], "both images in one settlement"
    reconciler.run_once()
    assert len(ledger(ctx, user_id)) == 3, "a settled job is not settled again"
    assert job_events(channel(), job_id) == [], "the user heard the outcome once"


def test_a_credits_without_the_settle_route_leaves_the_job_for_the_reconciler(
        ctx, user_id, channel, worker_with_older_credits, reconciler):
    job_id = admit(ctx, user_id)
    render_job(job_id, worker_with_older_credits)

    job, _ = job_state(ctx, job_id)
    assert (job.status, job.settled_at) == ("succeeded", None), "not marked settled: nothing was charged"
    assert ctx.credits.open_account(user_id) == {"available": 485, "held": 15}

    finished_long_ago(ctx, job_id)
    reconciler.run_once()  # credits upgraded: the settlement goes through, once
    assert job_state(ctx, job_id)[0].settled_at is not None
    assert ledger(ctx, user_id)[1:] == [("hold", -15, 15), ("capture", 0, -15)]


def test_a_failed_job_announces_its_refund_at_once_and_gets_it_when_credits_is_back(
        ctx, user_id, channel, worker_without_credits, reconciler, emulator_faults):
    emulator_faults(execution_error="out of memory (injected)")
    job_id = admit(ctx, user_id, batchSize=2)
    render_job(job_id, worker_without_credits)

    job, _ = job_state(ctx, job_id)
    assert (job.status, job.error_code, job.settled_at) == ("failed", "EXECUTION_ERROR", None)
    failed = [event["data"] for event in channel() if event["type"] == "job.failed"]
    assert failed[-1]["refunded"] == 30 and failed[-1]["charged"] == 0 and failed[-1]["settled"] is False
    assert ctx.credits.open_account(user_id) == {"available": 470, "held": 30}

    finished_long_ago(ctx, job_id)
    reconciler.run_once()
    assert ctx.credits.open_account(user_id) == {"available": 500, "held": 0}
    assert [kind for kind, *_ in ledger(ctx, user_id)] == ["signup_bonus", "hold", "release"]


def test_a_final_event_redis_did_not_take_is_published_by_the_reconciler(
        ctx, render_settings, render_config, user_id, channel, unreachable, reconciler):
    job_id = admit(ctx, user_id)
    without_redis = build_context(replace(render_settings, redis_url=f"redis://{unreachable}/0"),
                                  replace(render_config, comfyui_retry_seconds=1.0), "render@no-redis")
    render_job(job_id, without_redis)
    without_redis.comfyui.close()
    without_redis.db.dispose()

    job, _ = job_state(ctx, job_id)
    assert job.status == "succeeded" and job.settled_at is not None and job.announced_at is None
    assert ctx.credits.open_account(user_id) == {"available": 485, "held": 0}
    assert job_events(channel(), job_id) == []

    finished_long_ago(ctx, job_id)
    reconciler.run_once()
    assert [(event["type"], event["data"]) for event in job_events(channel(), job_id)] == [
        ("job.succeeded", {"jobId": job_id, "images": 1, "charged": 15, "refunded": 0, "settled": True})]
    assert job_state(ctx, job_id)[0].announced_at is not None


def test_queued_jobs_no_live_worker_offers_fail_after_the_grace_with_a_full_refund(
        ctx, user_id, channel, reconciler, unique):
    offered, orphaned = f"render-offered-{unique}.text2img", f"render-orphaned-{unique}.text2img"
    worker = f"render@{unique}"
    publish_catalog(ctx.events.redis, {"workerId": worker, "queues": [offered], "workflows": ["text2img"], "slots": 1})
    ctx.events.redis.set(alive_key(worker), "1", ex=30)
    publish_catalog(ctx.events.redis, {"workerId": f"render@dead-{unique}", "queues": [orphaned],
                                       "workflows": ["text2img"], "slots": 1})  # its heartbeat has stopped
    waiting = admit(ctx, user_id, queue=offered)
    stranded = admit(ctx, user_id, queue=orphaned, batchSize=2)
    assert ctx.credits.open_account(user_id) == {"available": 455, "held": 45}

    time.sleep(0.3)  # past the grace: no worker offered the orphaned queue since the reconciler started
    reconciler.run_once()
    ctx.events.redis.delete(catalog_key(worker), alive_key(worker), catalog_key(f"render@dead-{unique}"))

    job, _ = job_state(ctx, stranded)
    assert (job.status, job.error_code, job.error_class) == ("failed", "NO_WORKER", "system")
    assert "text2img" in job.error_message and job.settled_at is not None
    assert job_state(ctx, waiting)[0].status == "queued", "a queue a live worker offers keeps its jobs"
    assert ctx.credits.open_account(user_id) == {"available": 485, "held": 15}
    failed = [event["data"] for event in channel() if event["type"] == "job.failed"]
    assert [(e["jobId"], e["errorCode"], e["refunded"], e["settled"]) for e in failed] == [
        (stranded, "NO_WORKER", 30, True)]


def test_a_final_event_sent_again_after_a_crash_keeps_its_event_id_and_moves_credits_once(
        ctx, user_id, channel, reconciler, emulator_faults, notifications):
    emulator_faults(execution_error="out of memory (injected)")
    job_id = admit(ctx, user_id, batchSize=2)
    render_job(job_id, ctx)
    # A crash after the settlement and the publish, before both were recorded: both are owed again.
    with ctx.db.transaction() as session:
        session.execute(text("UPDATE render_jobs SET settled_at = NULL, announced_at = NULL WHERE id = :id"),
                        {"id": job_id})
    finished_long_ago(ctx, job_id)
    reconciler.run_once()

    failed = [event for event in job_events(channel(), job_id) if event["type"] == "job.failed"]
    assert len(failed) == 2 and failed[0]["id"] != failed[1]["id"], "sent twice, as two stream entries"
    assert {event["eventId"] for event in failed} == {f"job.failed:{job_id}"}, "one id to deduplicate on"
    replayed = [event for event in ctx.events.job_events_after(job_id) if event["type"] == "job.failed"]
    assert [event["eventId"] for event in replayed] == [f"job.failed:{job_id}"] * 2, "a resume replays the same id"
    assert ctx.credits.open_account(user_id) == {"available": 500, "held": 0}
    assert [kind for kind, *_ in ledger(ctx, user_id)] == ["signup_bonus", "hold", "release"], "refunded once"
    bells = [notice for notice in notifications[1] if notice["data"]["jobId"] == job_id]
    assert [notice["dedupeKey"] for notice in bells] == [f"job.failed:{job_id}"] * 2, \
        "the gallery stores one notification per key (tests/gallery)"
