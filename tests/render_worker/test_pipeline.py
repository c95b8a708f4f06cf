"""render_job end to end: emulator + real credits service + real Redis + real database."""
from __future__ import annotations

import hashlib
import io
import struct
import threading
import zlib

import pytest
from PIL import Image
from sqlalchemy import text

from services.render import cancel_signal, jobs, workflows
from services.render_worker import pipeline
from services.render_worker.pipeline import MAX_HOPS, render_job
from shared.labels import read_label

from tests.render_worker.helpers import admit, job_state, ledger


@pytest.mark.parametrize("knows_comfyui", [False, True], ids=["first-job", "later-job"])
def test_two_image_job_succeeds_charges_30_and_announces_in_order(ctx, user_id, channel, knows_comfyui):
    if knows_comfyui:  # as after its first job: the claim's transaction records the prompt too
        ctx.capabilities()
    job_id = admit(ctx, user_id, batchSize=2)
    render_job(job_id, ctx)

    job, outputs = job_state(ctx, job_id)
    assert job.status == "succeeded" and job.progress == 100 and job.images_delivered == 2 and job.attempts == 1
    assert job.comfy_prompt_id and job.worker == "render@test" and job.error_code is None
    assert job.variant and job.graph and job.started_at <= job.submitted_at
    assert job.settled_at is not None
    assert [output.index for output in outputs] == [0, 1]
    for output in outputs:
        assert ctx.storage.exists(output.image_key) and ctx.storage.exists(output.thumbnail_key)
        assert output.image_key.startswith("images/") and output.thumbnail_key.startswith("thumbs/")
        assert (output.width, output.height) == (64, 64) and output.file_size > 0
        stored = ctx.storage.read(output.image_key)
        assert output.sha256 == hashlib.sha256(stored).hexdigest() and output.sha256 in output.image_key
        assert output.file_size == len(stored)
    assert ctx.credits.open_account(user_id) == {"available": 470, "held": 0}
    assert ledger(ctx, user_id)[1:] == [("hold", -30, 30), ("capture", 0, -30)], "charged once, when it ended"

    events = [event for event in channel() if event["data"].get("jobId") == job_id]
    kinds = [event["type"] for event in events]
    assert kinds[0] == "job.started" and kinds[-3:] == ["job.image", "job.image", "job.succeeded"]
    assert set(kinds[1:-3]) == {"job.progress"}
    progress = [event["data"] for event in events if event["type"] == "job.progress"]
    assert progress[-1]["step"] == progress[-1]["totalSteps"] == 5 and 0 < progress[-1]["percent"] < 100
    assert [p["percent"] for p in progress] == sorted(p["percent"] for p in progress)
    assert events[-1]["data"] == {"jobId": job_id, "images": 2, "charged": 30, "refunded": 0, "settled": True}
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


def _png(pixel_data: bytes) -> bytes:
    """A 64×64 RGB PNG whose header and chunks are sound (checksums included) around
    ``pixel_data``: only decoding the pixels tells whether it is an image."""
    header = struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        for kind, body in ((b"IHDR", header), (b"IDAT", pixel_data), (b"IEND", b"")))


@pytest.mark.parametrize("data", [b"not an image at all", _png(b"\x78\x9c" + b"\xff" * 200),
                                  _png(zlib.compress(b"\x07" + b"\x00" * (64 * 3 + (1 + 64 * 3) * 63))),
                                  _png(zlib.compress(b"\x00" * (1 + 64 * 3) * 64))[:-20]],
                         ids=["not-an-image", "pixels-broken", "filter-unknown", "truncated"])
def test_a_file_that_is_not_an_image_fails_the_job_records_nothing_and_refunds(ctx, user_id, channel, monkeypatch,
                                                                                data):
    monkeypatch.setattr(ctx.comfyui, "fetch_image", lambda ref: data)
    job_id = admit(ctx, user_id)
    render_job(job_id, ctx)

    job, outputs = job_state(ctx, job_id)
    assert (job.status, job.error_code, outputs) == ("failed", "OUTPUT_UNREADABLE", [])
    assert ctx.credits.open_account(user_id) == {"available": 500, "held": 0}
    assert "job.image" not in [event["type"] for event in channel() if event["data"].get("jobId") == job_id]


def _thumbnail_of(ctx, output) -> Image.Image:
    with Image.open(io.BytesIO(ctx.storage.read(output.thumbnail_key))) as thumbnail:
        thumbnail.load()
        return thumbnail


def test_comfyui_makes_each_thumbnail_and_the_worker_only_labels_it(ctx, user_id, monkeypatch):
    monkeypatch.setattr(pipeline, "_decode_and_thumbnail", lambda *args: pytest.fail("decoded on the worker"))
    job_id = admit(ctx, user_id, batchSize=2, width=768, height=512)
    render_job(job_id, ctx)

    job, outputs = job_state(ctx, job_id)
    assert job.status == "succeeded" and [output.index for output in outputs] == [0, 1]
    assert not {node["class_type"] for node in job.graph.values()} & workflows.THUMBNAIL_NODE_CLASSES, \
        "the job records the workflow's graph, what reproduces its images"
    assert {"thumbnail0", "thumbnail1"} <= set(ctx.comfyui.history(job.comfy_prompt_id)["outputs"])
    for output in outputs:
        assert (output.width, output.height) == (768, 512)
        with Image.open(io.BytesIO(ctx.storage.read(output.image_key))) as original:
            original.load()
            expected = original.resize((512, 341))
            assert set(original.text) == {"AIGC", "XML:com.adobe.xmp"}, "ComfyUI's prompt and workflow dropped"
        thumbnail = _thumbnail_of(ctx, output)
        assert (thumbnail.format, thumbnail.size) == ("WEBP", (512, 341)), "the aspect ratio kept"
        # the thumbnail shows its own image: lossy, but far nearer to it than to the other one
        other = next(o for o in outputs if o is not output)
        with Image.open(io.BytesIO(ctx.storage.read(other.image_key))) as wrong:
            wrong = wrong.convert("RGB").resize((512, 341))
        assert _distance(thumbnail, expected) * 3 < _distance(thumbnail, wrong)
        data = ctx.storage.read(output.thumbnail_key)
        found = read_label(data, ctx.labels.secret)
        assert found.authentic and (found.produce_id, found.job_id) == (output.id, job_id)
        assert b"prompt:" not in data and b"workflow:" not in data, "ComfyUI's graph stays out of public files"


def _distance(a: Image.Image, b: Image.Image) -> float:
    pixels_a, pixels_b = a.convert("RGB").tobytes(), b.convert("RGB").tobytes()
    return sum(abs(x - y) for x, y in zip(pixels_a[::97], pixels_b[::97])) / len(pixels_a[::97])


def test_an_image_within_a_thumbnail_is_its_own_thumbnail_made_by_comfyui(ctx, user_id, monkeypatch):
    monkeypatch.setattr(pipeline, "_decode_and_thumbnail", lambda *args: pytest.fail("decoded on the worker"))
    small = admit(ctx, user_id, width=64, height=96)
    render_job(small, ctx)
    job, [output] = job_state(ctx, small)
    assert job.status == "succeeded" and (output.width, output.height) == (64, 96)
    thumbnail = _thumbnail_of(ctx, output)
    assert (thumbnail.format, thumbnail.size) == ("WEBP", (64, 96)), "never enlarged"
    assert read_label(ctx.storage.read(output.thumbnail_key), ctx.labels.secret).authentic


def test_a_thumbnail_comfyui_did_not_make_to_size_or_could_not_hand_over_is_made_here(ctx, user_id, monkeypatch):
    fetch = ctx.comfyui.fetch_image
    wrong_size = io.BytesIO()
    Image.new("RGB", (32, 32)).save(wrong_size, "WEBP")

    def thumbnails_missing(ref):
        if ref.filename.endswith(".webp") and ref.node_id == "thumbnail1":
            raise pipeline.ComfyUIError("GET /view answered 404.", code="OUTPUT_MISSING")
        if ref.filename.endswith(".webp") and ref.node_id == "thumbnail0":
            return wrong_size.getvalue()
        return fetch(ref)

    monkeypatch.setattr(ctx.comfyui, "fetch_image", thumbnails_missing)
    other_size = admit(ctx, user_id, width=64, height=96)
    render_job(other_size, ctx)
    _, [output] = job_state(ctx, other_size)
    assert _thumbnail_of(ctx, output).size == (64, 96)

    lost = admit(ctx, user_id, batchSize=2, width=512, height=512)
    render_job(lost, ctx)
    job, outputs = job_state(ctx, lost)
    assert job.status == "succeeded" and [_thumbnail_of(ctx, o).size for o in outputs] == [(512, 512), (512, 512)]
    for output in outputs:
        assert read_label(ctx.storage.read(output.thumbnail_key), ctx.labels.secret).authentic


def test_comfyuis_thumbnail_is_fetched_beside_the_original(ctx, user_id, monkeypatch):
    """The two files of an image come over two connections at once, not one after the other: the
    original's fetch here waits for the thumbnail's to begin (generous deadline, no timing)."""
    fetch, thumbnail_begun = ctx.comfyui.fetch_image, threading.Event()

    def fetch_waiting_for_the_thumbnail(ref):
        if ref.filename.endswith(".webp"):
            thumbnail_begun.set()
        elif not thumbnail_begun.wait(10):
            raise pipeline.ComfyUIError("the thumbnail was not being fetched", code="OUTPUT_MISSING")
        return fetch(ref)

    monkeypatch.setattr(ctx.comfyui, "fetch_image", fetch_waiting_for_the_thumbnail)
    job_id = admit(ctx, user_id, width=512, height=512)
    render_job(job_id, ctx)
    job, [output] = job_state(ctx, job_id)
    assert job.status == "succeeded" and _thumbnail_of(ctx, output).size == (512, 512)


def _submissions(ctx, monkeypatch) -> list[tuple[str, set[str]]]:
    """Each prompt the worker submits from now on: its id and its node classes."""
    submitted, run = [], ctx.comfyui.run

    def recording(graph, *args, prompt_id, **kwargs):
        submitted.append((prompt_id, {node["class_type"] for node in graph.values()}))
        return run(graph, *args, prompt_id=prompt_id, **kwargs)

    monkeypatch.setattr(ctx.comfyui, "run", recording)
    return submitted


def test_a_thumbnail_node_failing_in_comfyui_reruns_the_graph_without_the_chain_and_charges_once(
        ctx, user_id, channel, emulator_faults, monkeypatch, caplog):
    emulator_faults(fail_node_class="SaveAnimatedWEBP", persistent=True)  # a ComfyUI whose Pillow lacks WebP
    submitted = _submissions(ctx, monkeypatch)
    job_id = admit(ctx, user_id)
    with caplog.at_level("WARNING", logger="services.render_worker.pipeline"):
        render_job(job_id, ctx)

    job, [output] = job_state(ctx, job_id)
    assert (job.status, job.images_delivered, job.error_code) == ("succeeded", 1, None)
    (failed, chained), (rerun, plain) = submitted
    assert {"ImageFromBatch", "SaveAnimatedWEBP"} <= chained and not plain & workflows.THUMBNAIL_NODE_CLASSES
    assert plain == chained - workflows.THUMBNAIL_NODE_CLASSES, "the workflow's own graph once more"
    assert job.comfy_prompt_id == rerun != failed
    error = ctx.comfyui.history(failed)["status"]["messages"][-1]
    assert error[0] == "execution_error" and error[1]["node_type"] == "SaveAnimatedWEBP"
    thumbnail = _thumbnail_of(ctx, output)
    assert (thumbnail.format, thumbnail.size) == ("WEBP", (64, 64)), "made by the worker"
    assert read_label(ctx.storage.read(output.thumbnail_key), ctx.labels.secret).authentic
    assert ctx.credits.open_account(user_id) == {"available": 485, "held": 0}
    assert ledger(ctx, user_id)[1:] == [("hold", -15, 15), ("capture", 0, -15)], "one image, charged once"
    settled = [event["data"] for event in channel() if event["type"] == "job.succeeded"]
    assert settled == [{"jobId": job_id, "images": 1, "charged": 15, "refunded": 0, "settled": True}]
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "SaveAnimatedWEBP" in warning and "failed (injected)" in warning

    submitted.clear()
    second = admit(ctx, user_id, batchSize=2)
    render_job(second, ctx)
    job, outputs = job_state(ctx, second)
    assert job.status == "succeeded" and len(outputs) == 2
    [(prompt_id, classes)] = submitted
    assert prompt_id == job.comfy_prompt_id and not classes & workflows.THUMBNAIL_NODE_CLASSES, \
        "the chain is not sent to this ComfyUI for a while"


def test_a_failure_in_another_node_still_fails_the_job_and_refunds(ctx, user_id, emulator_faults, monkeypatch):
    emulator_faults(fail_node_class="SaveImage")
    submitted = _submissions(ctx, monkeypatch)
    job_id = admit(ctx, user_id, batchSize=2)
    render_job(job_id, ctx)

    job, outputs = job_state(ctx, job_id)
    assert (job.status, job.error_code, outputs) == ("failed", "EXECUTION_ERROR", [])
    assert "SaveImage" in job.error_message
    assert ctx.credits.open_account(user_id) == {"available": 500, "held": 0}
    [(prompt_id, classes)] = submitted
    assert prompt_id == job.comfy_prompt_id and {"ImageFromBatch", "SaveAnimatedWEBP"} <= classes, "not run again"
    assert ctx.thumbnails_paused_until == 0.0, "ComfyUI's thumbnails go on"


@pytest.mark.parametrize("damage", ["cut-short", "checksum-wrong"])
def test_an_original_damaged_on_its_way_fails_the_job_though_comfyui_made_its_thumbnail(ctx, user_id, channel,
                                                                                      monkeypatch, damage):
    fetch = ctx.comfyui.fetch_image

    def damaged(ref):
        data = fetch(ref)
        if ref.filename.endswith(".png"):
            middle = len(data) // 2
            data = data[:middle] if damage == "cut-short" else data[:middle] + bytes([data[middle] ^ 0x5A]) + data[middle + 1:]
        return data

    monkeypatch.setattr(ctx.comfyui, "fetch_image", damaged)
    job_id = admit(ctx, user_id, width=512, height=512)
    render_job(job_id, ctx)

    job, outputs = job_state(ctx, job_id)
    assert (job.status, job.error_code, outputs) == ("failed", "OUTPUT_UNREADABLE", [])
    assert ctx.credits.open_account(user_id) == {"available": 500, "held": 0}
    assert "job.image" not in [event["type"] for event in channel() if event["data"].get("jobId") == job_id]


def test_a_model_this_worker_lacks_is_passed_on_then_failed_and_refunded(ctx, user_id):
    job_id = admit(ctx, user_id)
    with ctx.db.transaction() as session:
        jobs.get_job(session, job_id).params = {**jobs.get_job(session, job_id).params, "model": "gone.safetensors"}
    render_job(job_id, ctx)
    job, _ = job_state(ctx, job_id)
    assert (job.status, job.worker) == ("queued", None), "handed back to the scheduler for another worker"
    entry = next(entry for entry, _ in ctx.fair.waiting("interactive", 10_000) if entry.job_id == job_id)
    assert (entry.hops, entry.avoid) == (1, ("render@test",))
    ctx.fair.remove(job_id)

    render_job(job_id, ctx, hops=MAX_HOPS)  # every worker it was offered to lacked the model
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
    """A worker died mid-job: the row says running on a dead worker and images were already charged."""
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


def cancel_at_step_3(ctx, job_id: str, signal: bool) -> None:
    """Request the job's cancel when ComfyUI reports step 3, as the render service does
    (the row, then the Redis signal) or with the signal lost."""
    original = ctx.comfyui.run

    def run_and_cancel(*args, hooks, **kwargs):
        report = hooks.on_progress

        def progress(step, total, percent):
            report(step, total, percent)
            if step == 3:
                with ctx.db.transaction() as session:
                    assert jobs.request_cancel(session, job_id) == "requested"
                if signal:
                    cancel_signal.send(ctx.events.redis, job_id)
        hooks.on_progress = progress
        return original(*args, hooks=hooks, **kwargs)

    ctx.comfyui.run = run_and_cancel


@pytest.mark.parametrize("signal", [True, False], ids=["signalled", "signal-lost"])
def test_cancel_requested_while_running_stops_and_refunds(ctx, user_id, channel, signal, monkeypatch):
    if not signal:  # the worker reads the row itself every CANCEL_ROW_SECONDS (5 s; shorter here)
        monkeypatch.setattr(pipeline, "CANCEL_ROW_SECONDS", 0.3)
    job_id = admit(ctx, user_id, steps=100)
    cancel_at_step_3(ctx, job_id, signal)
    render_job(job_id, ctx)
    job, outputs = job_state(ctx, job_id)
    assert job.status == "cancelled" and outputs == []
    assert ctx.credits.open_account(user_id) == {"available": 500, "held": 0}
    assert [event["data"] for event in channel() if event["type"] == "job.cancelled"] == [
        {"jobId": job_id, "refunded": 15, "images": 0, "charged": 0, "settled": True}]


def _claimed_hooks(ctx, user_id, monkeypatch):
    """A claimed 20-step job, its progress hooks and the clock they read (``clock[0]``)."""
    job_id = admit(ctx, user_id, steps=20)
    with ctx.db.transaction() as session:
        job = jobs.claim_job(session, job_id, ctx.worker_id, ctx.alive)
    clock = [1000.0]
    monkeypatch.setattr(pipeline.time, "monotonic", lambda: clock[0])
    return job_id, pipeline._Hooks(ctx, job), clock


def test_live_progress_is_sent_at_most_twice_a_second_and_always_at_the_last_step(ctx, user_id, channel,
                                                                                   monkeypatch):
    """A 2.5-s job of 20 steps (one every 0.125 s) tells its owner of 5 steps and the last one, not
    of every step: each event is the worker's publish, Redis's and the gateway's relay to each socket."""
    job_id, hooks, clock = _claimed_hooks(ctx, user_id, monkeypatch)
    for step in range(1, 21):
        clock[0] += 0.125
        hooks.progress(step, 20, step * 5)
    steps = [event["data"]["step"] for event in channel() if event["type"] == "job.progress"]
    assert steps == [1, 5, 9, 13, 17, 20]
    job, _ = job_state(ctx, job_id)
    assert job.first_progress_at is not None and job.progress == 85, "stored at the first step, then every 2 s"


def test_live_progress_never_steps_back(ctx, user_id, channel, monkeypatch):
    """A workflow run once more after its thumbnail chain failed starts its count below where the
    first run got (ComfyUI's cache, a shorter graph): the owner's bar holds until it passes it."""
    _, hooks, clock = _claimed_hooks(ctx, user_id, monkeypatch)
    for step, total, percent in [(20, 20, 95), (1, 1, 80), (20, 20, 90), (1, 1, 97)]:
        clock[0] += 1
        hooks.progress(step, total, percent)
    percents = [event["data"]["percent"] for event in channel() if event["type"] == "job.progress"]
    assert percents == [95, 97]
