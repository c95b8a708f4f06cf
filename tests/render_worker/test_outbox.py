"""A finished job's outbox: what credits or Redis did not take when the job ended is kept on the
job and finished by the reconciler, so a delivered image is charged once, an undelivered one
never, and the user always hears how the job ended; a thumbnail a dying worker did not store is
made before the job leaves the outbox."""
from __future__ import annotations

import io
import time
from dataclasses import replace

import pytest
from flask import Flask
from PIL import Image
from sqlalchemy import text

from services.render.catalog import alive_key, catalog_key, publish_catalog
from services.render_worker import pipeline
from services.render_worker.pipeline import build_context, fail_and_refund, render_job
from services.render_worker.reconciler import Reconciler
from shared.embedded import free_port
from shared.labels import read_label

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


class WorkerDied(BaseException):
    """The worker process ends here (a SIGKILL, the host lost): nothing after it runs."""


def die(*_args, **_kwargs):
    raise WorkerDied()


def assert_thumbnail_made(ctx, job_id: str, output) -> None:
    assert ctx.storage.exists(output.thumbnail_key), "made from the stored original, under the row's key"
    thumbnail = ctx.storage.read(output.thumbnail_key)
    with Image.open(io.BytesIO(thumbnail)) as image:
        assert (image.format, image.size) == ("WEBP", (output.width, output.height))
    label = read_label(thumbnail, ctx.labels.secret)
    assert label.authentic and label.produce_id == output.id and label.job_id == job_id


def test_a_worker_that_died_after_the_final_event_before_the_thumbnail_leaves_it_to_the_reconciler(
        ctx, user_id, channel, reconciler, monkeypatch):
    job_id = admit(ctx, user_id)
    monkeypatch.setattr(pipeline, "_store_thumbnail", die)
    with pytest.raises(WorkerDied):
        render_job(job_id, ctx)
    monkeypatch.undo()

    job, [output] = job_state(ctx, job_id)
    assert (job.status, job.settled_at, job.announced_at) == ("succeeded", None, None), "still in the outbox"
    assert ctx.storage.exists(output.image_key) and not ctx.storage.exists(output.thumbnail_key)
    assert [event["type"] for event in job_events(channel(), job_id)][-2:] == ["job.image", "job.succeeded"]

    finished_long_ago(ctx, job_id)
    reconciler.run_once()
    assert_thumbnail_made(ctx, job_id, output)
    job, _ = job_state(ctx, job_id)
    assert job.settled_at is not None and job.announced_at is not None
    assert ledger(ctx, user_id)[1:] == [("hold", -15, 15), ("capture", 0, -15)], "charged once"
    assert [event["type"] for event in job_events(channel(), job_id)] == ["job.succeeded"], \
        "announced again, as after any crash after a publish"


def test_a_job_failed_after_its_worker_died_mid_batch_gets_its_thumbnail_before_it_is_settled(
        ctx, user_id, reconciler, monkeypatch):
    job_id = admit(ctx, user_id, batchSize=2)
    fetch = ctx.comfyui.fetch_image
    fetched = []

    def fetch_then_die(ref):
        fetched.append(ref)
        if len(fetched) == 2:
            raise WorkerDied()  # the first image's row committed, its thumbnail was not made yet
        return fetch(ref)

    monkeypatch.setattr(ctx.comfyui, "fetch_image", fetch_then_die)
    with pytest.raises(WorkerDied):
        render_job(job_id, ctx)
    monkeypatch.undo()
    job, [output] = job_state(ctx, job_id)
    assert job.status == "running" and not ctx.storage.exists(output.thumbnail_key)

    assert fail_and_refund(reconciler.ctx, job, "WORKER_LOST", "The render worker was lost.")
    assert_thumbnail_made(ctx, job_id, output)
    assert job_state(ctx, job_id)[0].settled_at is not None
    assert ledger(ctx, user_id)[1:] == [("hold", -30, 30), ("capture", 0, -15), ("release", 15, -15)]


def test_a_thumbnail_the_store_refused_keeps_the_job_in_the_outbox_until_it_is_made(
        ctx, user_id, channel, reconciler, monkeypatch):
    job_id = admit(ctx, user_id)
    put = ctx.storage.put

    def refuse_thumbnails(key, data):
        if key.startswith("thumbs/"):
            raise OSError("disk full")
        return put(key, data)

    monkeypatch.setattr(ctx.storage, "put", refuse_thumbnails)
    render_job(job_id, ctx)
    monkeypatch.undo()
    job, [output] = job_state(ctx, job_id)
    assert (job.status, job.settled_at, job.announced_at) == ("succeeded", None, None)
    assert [event["data"]["settled"] for event in job_events(channel(), job_id) if event["type"] == "job.succeeded"] \
        == [True], "the user heard the truth: charged and settled"

    finished_long_ago(ctx, job_id)
    reconciler.run_once()
    assert_thumbnail_made(ctx, job_id, output)
    assert job_state(ctx, job_id)[0].announced_at is not None
    assert ledger(ctx, user_id)[1:] == [("hold", -15, 15), ("capture", 0, -15)], "charged once"
