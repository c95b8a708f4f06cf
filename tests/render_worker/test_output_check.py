"""The output check (``CONTENT_IMAGE_CHECKER``) in a real render: an operator's moderation service
over HTTP (a stand-in Flask app) and the shipped test checker. A flagged image is not shown, not
charged and gets no output; it is kept under a private ``quarantine/`` key that only the admin
audit log hands out (signed, short-lived) and is announced for moderators; a checker that times
out lets the image through when failing open and fails the job, refunded, when failing closed.
Every image that is delivered carries the implicit label."""
from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask, jsonify, request
from PIL import Image

from services.gateway import files
from services.render_worker.pipeline import build_context, render_job
from services.safety.client import AUDIT_STREAM
from shared.events import PLATFORM_STREAM
from shared.labels import read_label
from shared.web import init_service_app

from services.safety.app import create_app as create_safety_app
from tests.conftest import serve
from tests.safety_fixtures import audit_rows
from tests.render_worker.helpers import admit, job_state, ledger


class Moderation:
    """The operator's moderation service: flags the indexes in ``flag``; holds each answer up to
    ``delay`` seconds first (until ``release`` is set); ``answered`` counts the answers sent."""

    def __init__(self) -> None:
        self.flag: set[int] = set()
        self.delay = 0.0
        self.seen: list[dict] = []
        self.answered = 0
        self.release = threading.Event()
        app = Flask("moderation")

        @app.post("/check")
        def check():
            self.seen.append({"type": request.content_type, "job": request.headers.get("X-Job-Id"),
                              "index": int(request.headers["X-Output-Index"]),
                              "auth": request.headers.get("Authorization"), "body": request.get_data()})
            if self.delay:
                self.release.wait(self.delay)
            flagged = int(request.headers["X-Output-Index"]) in self.flag
            self.answered += 1
            return jsonify({"flagged": flagged, "categories": ["violence"] if flagged else [], "reason": "test"})

        self.running = serve(app)
        self.url = self.running.url + "/check"


@pytest.fixture
def moderation():
    service = Moderation()
    yield service
    service.release.set()
    service.running.stop()


@pytest.fixture
def checked(render_settings, render_config):
    """A worker context with the given checker settings."""
    made = []

    def _make(**checker) -> object:
        config = replace(render_config, comfyui_retry_seconds=1.0, **checker)
        context = build_context(render_settings, config, "render@checked")
        made.append(context)
        return context

    yield _make
    for context in made:
        context.comfyui.close()
        context.credits.close()
        context.db.dispose()


@pytest.fixture
def gateway_media(render_settings):
    """The gateway's ``/media`` with a gallery that calls every key public: a quarantined image
    must need its signature all the same."""
    gallery = Flask("careless_gallery")

    @gallery.get("/internal/media/<path:key>/access")
    def access(key):
        return jsonify({"success": True, "data": {"key": key, "public": True}})

    running = serve(gallery)
    app = Flask("gateway_media")
    init_service_app(app, replace(render_settings, gallery_url=running.url), internal=False)
    app.register_blueprint(files.bp)
    yield app.test_client()
    running.stop()


def _fetch(client, url: str):
    response = client.get(url)
    response.get_data()
    response.close()
    return response


def _audit_entries(ctx, job_id: str) -> list[dict]:
    return [entry for entry in (json.loads(fields["event"]) for _, fields in ctx.events.redis.xrange(AUDIT_STREAM))
            if entry["subject"] == f"job:{job_id}"]


def _announcements(ctx, job_id: str) -> list[dict]:
    return [fields for _, fields in ctx.events.redis.xrange(PLATFORM_STREAM)
            if fields.get("type") == "content.output_flagged" and fields.get("jobId") == job_id]


def _images_in_storage(ctx) -> set[str]:
    return {str(path) for path in (ctx.storage.root / "images").rglob("*.png")}


def test_a_flagged_image_is_withheld_not_charged_and_announced(checked, moderation, user_id, channel):
    ctx = checked(image_checker=moderation.url, image_checker_token="s3cret")
    moderation.flag = {0}
    before = _images_in_storage(ctx)
    job_id = admit(ctx, user_id)

    render_job(job_id, ctx)

    job, outputs = job_state(ctx, job_id)
    assert job.status == "failed" and job.error_code == "OUTPUT_FLAGGED" and job.error_class == "user"
    assert "withheld by the content check" in job.error_message and job.images_delivered == 0
    assert outputs == [] and _images_in_storage(ctx) == before  # nothing stored for the user
    assert ctx.credits.open_account(user_id) == {"available": 500, "held": 0}
    assert [row[0] for row in ledger(ctx, user_id)] == ["signup_bonus", "hold", "release"]
    events = [event for event in channel() if event["data"].get("jobId") == job_id]
    assert "job.image" not in [event["type"] for event in events]
    assert "job.preview" not in [event["type"] for event in events]  # nothing shown before the check
    assert events[-1]["type"] == "job.failed" and events[-1]["data"]["errorCode"] == "OUTPUT_FLAGGED"
    assert events[-1]["data"]["refunded"] == 15 and events[-1]["data"]["charged"] == 0
    [announced] = _announcements(ctx, job_id)
    data = json.loads(announced["data"])
    assert announced["userId"] == str(user_id) and data["index"] == 0 and data["categories"] == ["violence"]
    assert data["checker"] == moderation.url and len(data["sha256"]) == 64
    [audit] = _audit_entries(ctx, job_id)
    assert audit["action"] == "output_flagged" and audit["category"] == "violence" and audit["actorId"] == user_id
    assert audit["detail"]["sha256"] == data["sha256"], "the moderators' audit log has it too"
    assert audit["mediaKey"].startswith("quarantine/") and data["quarantineKey"] == audit["mediaKey"]
    assert "quarantine/" not in json.dumps(events), "the user is never told where it is kept"
    safety = create_safety_app(ctx.settings)
    try:  # what the admin console's audit page reads (its search stores the stream first)
        [row] = audit_rows(safety, action="output_flagged", subject=f"job:{job_id}")
    finally:
        safety.extensions["db"].dispose()
    assert (row["source"], row["actorId"], row["category"], row["severity"]) == (
        "render.output", user_id, "violence", "block")
    assert row["detail"]["reason"] == "test" and row["detail"]["checker"] == moderation.url
    assert row["mediaKey"] == audit["mediaKey"]
    [seen] = moderation.seen
    assert seen["job"] == job_id and seen["index"] == 0 and seen["auth"] == "Bearer s3cret"
    assert seen["type"] == "image/png" and Image.open(io.BytesIO(seen["body"])).format == "PNG"
    kept = Image.open(io.BytesIO(ctx.storage.read(row["mediaKey"])))
    assert kept.tobytes() == Image.open(io.BytesIO(seen["body"])).tobytes(), "moderators see what was checked"


def test_a_flagged_image_is_kept_for_moderators_behind_a_signed_link(checked, user_id, gateway_media):
    ctx = checked(image_checker="services.render_worker.checkers:demo_checker")
    job_id = admit(ctx, user_id, prompt="a lighthouse [flag-test]")

    render_job(job_id, ctx)

    [audit] = _audit_entries(ctx, job_id)
    key = audit["mediaKey"]
    assert key.startswith("quarantine/") and key.endswith(".png")
    label = read_label(ctx.storage.read(key), ctx.labels.secret)
    assert label.authentic and label.job_id == job_id, "kept files are labelled like every stored image"
    assert key not in job_state(ctx, job_id)[0].error_message
    # Without the signature it is not there, even though this gallery would call any key public.
    assert _fetch(gateway_media, f"/media/{key}").status_code == 404
    forged = _fetch(gateway_media, f"/media/{key}?exp=9999999999&sig={'0' * 32}")
    assert forged.status_code == 403 and forged.get_json()["error"]["code"] == "MEDIA_LINK_INVALID"
    assert _fetch(gateway_media, f"/media/{key}?download=1").status_code == 404
    safety = create_safety_app(ctx.settings)
    try:  # the admin console's audit search signs a link that lives minutes, not hours
        [row] = audit_rows(safety, action="output_flagged", subject=f"job:{job_id}")
    finally:
        safety.extensions["db"].dispose()
    assert row["mediaKey"] == key and row["mediaUrl"].startswith(f"/media/{key}?exp=")
    assert int(parse_qs(urlsplit(row["mediaUrl"]).query)["exp"][0]) - time.time() <= 600
    response = _fetch(gateway_media, row["mediaUrl"])
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.headers["Cache-Control"].startswith("private, max-age=")
    assert response.get_data() == ctx.storage.read(key)


def test_only_the_flagged_image_of_a_batch_is_withheld(checked, moderation, user_id):
    ctx = checked(image_checker=moderation.url)
    moderation.flag = {1}
    job_id = admit(ctx, user_id, batchSize=2)

    render_job(job_id, ctx)

    job, outputs = job_state(ctx, job_id)
    assert job.status == "failed" and job.error_code == "OUTPUT_FLAGGED" and job.images_delivered == 1
    assert [output.index for output in outputs] == [0]
    assert ctx.credits.open_account(user_id) == {"available": 485, "held": 0}
    for key, source in ((outputs[0].image_key, "png-text"), (outputs[0].thumbnail_key, "xmp")):
        label = read_label(ctx.storage.read(key), ctx.labels.secret)
        assert label.authentic and label.source == source
        assert label.produce_id == outputs[0].id and label.job_id == job_id


@pytest.mark.parametrize("fail_closed", [False, True], ids=["fail-open", "fail-closed"])
def test_a_checker_that_times_out(checked, moderation, user_id, fail_closed):
    ctx = checked(image_checker=moderation.url, image_checker_timeout=0.3, image_checker_fail_closed=fail_closed)
    moderation.delay, moderation.flag = 30.0, {0}  # it would flag, but answers far too late
    job_id = admit(ctx, user_id)

    render_job(job_id, ctx)
    assert moderation.seen and moderation.answered == 0  # asked, and done while the answer was still held

    job, outputs = job_state(ctx, job_id)
    if fail_closed:
        assert job.status == "failed" and job.error_code == "OUTPUT_CHECK_UNAVAILABLE" and outputs == []
        assert ctx.credits.open_account(user_id) == {"available": 500, "held": 0}
        assert [row[0] for row in ledger(ctx, user_id)] == ["signup_bonus", "hold", "release"]
    else:
        assert job.status == "succeeded" and len(outputs) == 1
        assert ctx.credits.open_account(user_id) == {"available": 485, "held": 0}
    assert _announcements(ctx, job_id) == []


def test_an_unreachable_checker_under_both_fail_modes(checked, user_id):
    for fail_closed, status in ((False, "succeeded"), (True, "failed")):
        ctx = checked(image_checker="http://127.0.0.1:9/check", image_checker_fail_closed=fail_closed)
        job_id = admit(ctx, user_id)
        render_job(job_id, ctx)
        assert job_state(ctx, job_id)[0].status == status


def test_the_shipped_test_checker_flags_a_marked_prompt(checked, user_id):
    ctx = checked(image_checker="services.render_worker.checkers:demo_checker")
    flagged, clean = admit(ctx, user_id, prompt="a lighthouse [flag-test]"), admit(ctx, user_id)
    render_job(flagged, ctx)
    render_job(clean, ctx)
    assert job_state(ctx, flagged)[0].error_code == "OUTPUT_FLAGGED" and job_state(ctx, flagged)[1] == []
    assert job_state(ctx, clean)[0].status == "succeeded"
    assert ctx.credits.open_account(user_id) == {"available": 485, "held": 0}


def test_a_checker_setting_that_names_nothing_stops_the_worker(render_settings, render_config):
    from shared.config import ConfigError
    for spec in ("services.render_worker.checkers:nothing_here", "no_such_module_x:check", "just-a-word"):
        with pytest.raises(ConfigError):
            build_context(render_settings, replace(render_config, image_checker=spec), "render@bad")
