"""The render domain's HTTP API (the routes the gateway mounts)."""
from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from sqlalchemy import update
from services.credits.client import CreditsClient
from services.render.app import create_app
from services.render.catalog import publish_catalog
from services.render.models import RenderJob, RenderUpload
from services.render_worker.pipeline import build_context, render_job
from shared.tasks import RENDER_RUN_JOB

from tests.render_fixtures import BODY, MODEL, balance


def test_generate_admits_holds_and_queues_after_commit(app, user, redis, queue, live_worker, render_settings,
                                                       scheduler):
    user_id, headers = user
    response = app.test_client().post("/api/generate", json=BODY, headers=headers)
    assert response.status_code == 202, response.json
    data = response.json["data"]
    job = data["job"]
    assert job["status"] == "queued" and job["imagesRequested"] == 2 and job["pricePerImage"] == 15
    assert job["params"]["width"] == 64 and job["params"]["seed"] >= 0 and "warnings" not in data
    assert isinstance(data["queuePosition"], int)
    assert balance(render_settings, user_id) == {"available": 470, "held": 30}
    assert data["queuePosition"] == 0 and redis.lrange(f"{queue}.worker.render@a", 0, -1) == [], \
        "the job waits in the scheduler's line until a worker has a free slot"
    assert scheduler.run_once() == 1
    messages = [json.loads(raw) for raw in redis.lrange(f"{queue}.worker.render@a", 0, -1)]
    assert [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages] == [(RENDER_RUN_JOB, f"['{job['id']}']")]
    assert scheduler.run_once() == 0, "released once"

    fetched = app.test_client().get(f"/api/jobs/{job['id']}", headers=headers)
    assert fetched.status_code == 200 and fetched.json["data"]["id"] == job["id"]
    listed = app.test_client().get("/api/jobs?status=queued&pageSize=5", headers=headers).json["data"]
    assert [item["id"] for item in listed["items"]] == [job["id"]] and listed["total"] == 1


def test_admins_see_every_users_jobs(app, user, issue_token, live_worker):
    user_id, headers = user
    job_id = app.test_client().post("/api/generate", json=BODY, headers=headers).json["data"]["job"]["id"]
    admin = {"Authorization": f"Bearer {issue_token(1, 'root', role='admin')}"}
    listed = app.test_client().get("/api/admin/jobs?status=queued&pageSize=100", headers=admin)
    assert listed.status_code == 200
    mine = [item for item in listed.json["data"]["items"] if item["id"] == job_id]
    assert mine and mine[0]["userId"] == user_id and listed.json["data"]["total"] >= 1
    timings = mine[0]["timings"]  # the timing breakdown: only queued so far
    assert timings["queuedAt"] and not any(timings[step] for step in ("pickedAt", "submittedAt", "settledAt"))
    assert app.test_client().get("/api/admin/jobs", headers=headers).status_code == 403


def test_generate_without_a_worker_for_the_workflow_is_503_and_holds_nothing(app, user, redis, render_settings):
    response = app.test_client().post("/api/generate", json=BODY, headers=user[1])
    assert response.status_code == 503 and response.json["error"]["code"] == "RENDER_UNAVAILABLE"
    assert balance(render_settings, user[0]) == {"available": 500, "held": 0}


def test_model_no_live_worker_holds_is_422(app, user, live_worker):
    response = app.test_client().post("/api/generate", json={**BODY, "model": "other.safetensors"}, headers=user[1])
    assert response.status_code == 422 and response.json["error"]["code"] == "MODEL_UNAVAILABLE"


@pytest.mark.parametrize("body,field", [({**BODY, "size": "0x7"}, "size"), ({**BODY, "batchSize": 1.5}, "batchSize"),
                                        ({**BODY, "bogus": 1}, "bogus"), ({"model": MODEL}, "prompt")])
def test_bad_parameters_are_422_and_charge_nothing(app, user, live_worker, render_settings, body, field):
    response = app.test_client().post("/api/generate", json=body, headers=user[1])
    assert response.status_code == 422 and field in response.json["error"]["details"]
    assert balance(render_settings, user[0]) == {"available": 500, "held": 0}


def test_short_balance_is_402_with_details_and_no_job(app, user, live_worker, render_settings):
    user_id, headers = user
    credits = CreditsClient(render_settings.credits_url, render_settings.service_token)
    for index in range(8):  # 480 of 500 held elsewhere
        credits.hold(user_id, f"other-{user_id}-{index}", "text2img", 4, "elsewhere")
    client = app.test_client()
    response = client.post("/api/generate", json={**BODY, "batchSize": 4}, headers=headers)
    assert response.status_code == 402
    assert response.json["error"]["code"] == "INSUFFICIENT_CREDITS"
    assert response.json["error"]["details"]["shortfall"] == 40
    assert client.get("/api/jobs", headers=headers).json["data"]["total"] == 0


def test_the_estimated_start_counts_the_jobs_running_on_the_fleet(app, user, live_worker):
    """Admission's answer and a later read of the job agree: with the fleet's 2 slots busy, a job
    first in line starts one round of jobs later than it would have. (Measured against a job
    admitted first: the database outlives each test, and rows other tests left running count.)"""
    _, headers = user
    client = app.test_client()
    service = app.extensions["render"]
    seconds = service.templates.get("text2img").estimated_seconds
    probe = client.post("/api/generate", json=BODY, headers=headers).json["data"]
    assert probe["queuePosition"] == 0
    client.delete(f"/api/jobs/{probe['job']['id']}", headers=headers)
    busy = [client.post("/api/generate", json=BODY, headers=headers).json["data"]["job"]["id"] for _ in range(2)]
    running = update(RenderJob).where(RenderJob.id.in_(busy))
    with service.db.transaction() as session:
        session.execute(running.values(status="running", worker="render@a"))
    for job_id in busy:
        service.fair.remove(job_id)  # what the scheduler's release and the claim leave behind
    try:
        admitted = client.post("/api/generate", json=BODY, headers=headers).json["data"]
        expected = (0, probe["estimatedStartSeconds"] + seconds)
        assert (admitted["queuePosition"], admitted["estimatedStartSeconds"]) == expected
        read = client.get(f"/api/jobs/{admitted['job']['id']}", headers=headers).json["data"]
        assert (read["queuePosition"], read["estimatedStartSeconds"]) == expected
    finally:  # no running jobs left on render@a for the next tests
        with service.db.transaction() as session:
            session.execute(running.values(status="queued", worker=None))
        for job_id in busy:
            client.delete(f"/api/jobs/{job_id}", headers=headers)


def test_a_fifth_active_job_is_429_until_one_finishes(app, user, live_worker, render_settings):
    user_id, headers = user
    client = app.test_client()
    admitted = [client.post("/api/generate", json=BODY, headers=headers) for _ in range(4)]
    assert [r.status_code for r in admitted] == [202] * 4
    assert [r.json["data"]["queuePosition"] for r in admitted] == sorted(r.json["data"]["queuePosition"]
                                                                           for r in admitted)
    limited = client.post("/api/generate", json=BODY, headers=headers)
    assert limited.status_code == 429 and limited.json["error"]["code"] == "QUEUE_LIMIT"
    assert limited.json["error"]["details"] == {"active": 4, "limit": 4}
    assert balance(render_settings, user_id) == {"available": 500 - 4 * 30, "held": 120}
    client.delete(f"/api/jobs/{admitted[0].json['data']['job']['id']}", headers=headers)
    assert client.post("/api/generate", json=BODY, headers=headers).status_code == 202


def test_same_idempotency_key_gives_the_same_job_charged_once(app, user, live_worker, render_settings):
    user_id, headers = user
    client = app.test_client()
    keyed = {**headers, "Idempotency-Key": "k-1"}
    first = client.post("/api/generate", json=BODY, headers=keyed)
    again = client.post("/api/generate", json=BODY, headers=keyed)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json["data"]["job"]["id"] == again.json["data"]["job"]["id"]
    assert balance(render_settings, user_id) == {"available": 470, "held": 30}


def test_concurrent_replays_of_one_idempotency_key_make_one_job_and_answer_200(app, user, live_worker,
                                                                             render_settings):
    user_id, headers = user
    keyed = {**headers, "Idempotency-Key": "k-race"}
    start = threading.Barrier(4)

    def submit():
        client = app.test_client()
        start.wait()
        return client.post("/api/generate", json=BODY, headers=keyed)

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: submit(), range(4)))
    assert sorted(response.status_code for response in responses) == [200, 200, 200, 202]
    assert len({response.json["data"]["job"]["id"] for response in responses}) == 1
    assert balance(render_settings, user_id) == {"available": 470, "held": 30}


def test_a_request_older_than_the_admission_deadline_holds_nothing(render_settings, render_config, queue, user,
                                                                   live_worker):
    user_id, headers = user
    app = create_app(render_settings, replace(render_config, queue_prefix=queue, admission_deadline_seconds=1e-9))
    try:
        response = app.test_client().post("/api/generate", json=BODY, headers=headers)
    finally:
        app.extensions["render"].db.dispose()
    assert (response.status_code, response.json["error"]["code"]) == (503, "ADMISSION_EXPIRED")
    assert balance(render_settings, user_id) == {"available": 500, "held": 0}


def test_cancel_of_a_queued_job_refunds_and_a_finished_one_is_409(app, user, live_worker, render_settings, redis, render_config):
    user_id, headers = user
    client = app.test_client()
    job_id = client.post("/api/generate", json=BODY, headers=headers).json["data"]["job"]["id"]
    cancelled = client.delete(f"/api/jobs/{job_id}", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json["data"]["status"] == "cancelled"
    assert balance(render_settings, user_id) == {"available": 500, "held": 0}
    assert client.delete(f"/api/jobs/{job_id}", headers=headers).json["error"]["code"] == "JOB_FINISHED"
    ctx = build_context(render_settings, render_config, "render@test")
    render_job(job_id, ctx)  # the queued message arrives later: the worker skips it
    assert client.get(f"/api/jobs/{job_id}", headers=headers).json["data"]["status"] == "cancelled"
    assert balance(render_settings, user_id) == {"available": 500, "held": 0}
    ctx.db.dispose()


def test_other_users_jobs_are_404(app, user, issue_token, live_worker):
    job_id = app.test_client().post("/api/generate", json=BODY, headers=user[1]).json["data"]["job"]["id"]
    stranger = {"Authorization": f"Bearer {issue_token(1, 'stranger')}"}
    for method in ("get", "delete"):
        response = getattr(app.test_client(), method)(f"/api/jobs/{job_id}", headers=stranger)
        assert response.status_code == 404 and response.json["error"]["code"] == "JOB_NOT_FOUND"
    assert app.test_client().get(f"/api/jobs/{job_id}").status_code == 401


def test_internal_outputs_needs_the_service_token(app, user, live_worker, render_settings, service_headers, render_config):
    user_id, headers = user
    job_id = app.test_client().post("/api/generate", json=BODY, headers=headers).json["data"]["job"]["id"]
    ctx = build_context(render_settings, render_config, "render@test")
    render_job(job_id, ctx)
    ctx.db.dispose()
    job = app.test_client().get(f"/api/jobs/{job_id}", headers=headers).json["data"]
    assert job["status"] == "succeeded" and job["cost"] == 30 and len(job["outputs"]) == 2
    output_id = job["outputs"][0]["id"]
    client = app.test_client()
    assert client.get(f"/internal/outputs/{output_id}").status_code == 403
    assert client.get(f"/internal/outputs/{output_id}", headers={"X-Service-Token": "wrong"}).status_code == 403
    record = client.get(f"/internal/outputs/{output_id}", headers=service_headers).json["data"]
    assert record["jobId"] == job_id and record["userId"] == user_id and record["index"] == 0
    assert record["params"]["prompt"] == "a quiet harbour" and record["params"]["width"] == 64
    assert job["outputs"][0]["imageUrl"].startswith(f"/media/{record['imageKey']}?exp="), "unsaved: signed"
    missing = client.get("/internal/outputs/nope", headers=service_headers)
    assert missing.status_code == 404 and missing.json["error"]["code"] == "OUTPUT_NOT_FOUND"


def test_models_lists_the_live_catalog_with_worker_counts_and_prices(app, live_worker):
    data = app.test_client().get("/api/models").json["data"]
    assert [(m["name"], m["kind"], m["workers"]) for m in data["models"]] == [(MODEL, "checkpoints", 1)]
    assert data["liveWorkers"] == 1
    assert data["samplers"] == ["euler"] and data["schedulers"] == ["normal"]
    workflows = {w["name"]: w for w in data["workflows"]}
    assert workflows["text2img"]["pricePerImage"] == 15 and workflows["text2img"]["workers"] == 1
    assert workflows["flux_text2img"]["workers"] == 0
    assert all("bind" not in p for w in workflows.values() for p in w["parameters"])
    assert data["workers"][0]["workerId"] == "render@a" and data["workers"][0]["slots"] == 2


def test_internal_job_lookup_for_the_credits_sweeper(app, user, live_worker, service_headers):
    job_id = app.test_client().post("/api/generate", json=BODY, headers=user[1]).json["data"]["job"]["id"]
    client = app.test_client()
    assert client.get(f"/internal/jobs/{job_id}").status_code == 403
    found = client.get(f"/internal/jobs/{job_id}", headers=service_headers).json["data"]
    assert found == {"id": job_id, "userId": user[0], "status": "queued", "settled": False, "idempotencyKey": None}
    missing = client.get("/internal/jobs/nope", headers=service_headers)
    assert missing.status_code == 404 and missing.json["error"]["code"] == "JOB_NOT_FOUND"
    assert client.get(f"/internal/jobs/{job_id}/outputs", headers=service_headers).json["data"] == {"items": []}


def test_a_cancel_while_credits_is_down_stands_and_the_hold_sweeper_waits_for_its_refund(
        render_settings, render_config, queue, app, user, live_worker, service_headers):
    from services.render.client import RenderClient
    from shared.embedded import free_port
    from tests.conftest import serve

    user_id, headers = user
    job_id = app.test_client().post("/api/generate", json=BODY, headers=headers).json["data"]["job"]["id"]
    down = create_app(replace(render_settings, credits_url=f"http://127.0.0.1:{free_port()}"),
                      replace(render_config, queue_prefix=queue))
    cancelled = down.test_client().delete(f"/api/jobs/{job_id}", headers=headers)
    assert cancelled.status_code == 200, cancelled.json
    assert cancelled.json["data"]["status"] == "cancelled" and cancelled.json["data"]["settledAt"] is None
    assert balance(render_settings, user_id) == {"available": 470, "held": 30}

    served = serve(app)
    try:
        jobs = RenderClient(served.url, render_settings.service_token)
        assert jobs.job_status(job_id) == "settling", "credits' sweeper keeps the hold of a job still settling"
        assert app.extensions["render"].outbox.settle(job_id)
        assert jobs.job_status(job_id) == "cancelled"
    finally:
        served.stop()
        down.extensions["render"].db.dispose()
    assert balance(render_settings, user_id) == {"available": 500, "held": 0}
    assert app.test_client().get(f"/api/jobs/{job_id}", headers=headers).json["data"]["settledAt"]


def test_models_lists_vae_files_as_models_and_comfyuis_builtin_options_apart(app, redis):
    publish_catalog(redis, {"workerId": "render@flux", "vaes": ["ae.safetensors"],
                            "builtin_vaes": ["taesd", "pixel_space"], "workflows": ["flux_text2img"], "slots": 1})
    data = app.test_client().get("/api/models").json["data"]
    assert [m["name"] for m in data["models"] if m["kind"] == "vaes"] == ["ae.safetensors"]
    assert data["builtinVaes"] == ["taesd", "pixel_space"]


def _png(width: int, height: int, image_format: str = "PNG") -> bytes:
    import io

    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, format=image_format)
    return buffer.getvalue()


@pytest.mark.parametrize("data,status,code", [
    (b"GIF89a not really", 422, "INVALID_IMAGE"),
    (_png(8, 8, "GIF"), 422, "INVALID_IMAGE"),
    (_png(8, 8)[:40], 422, "INVALID_IMAGE"),
    (b"", 422, "INVALID_IMAGE"),
])
def test_uploads_must_decode_as_png_jpeg_or_webp(app, user, data, status, code):
    import io
    response = app.test_client().post("/api/uploads", headers=user[1],
                                      data={"image": (io.BytesIO(data), "x.png")})
    assert response.status_code == status and response.json["error"]["code"] == code


def test_an_upload_is_the_users_own_source(app, user, issue_token, live_worker, render_settings):
    import io
    client = app.test_client()
    for image_format in ("PNG", "JPEG", "WEBP"):
        stored = client.post("/api/uploads", headers=user[1],
                             data={"image": (io.BytesIO(_png(64, 48, image_format)), "in.bin")})
        assert stored.status_code == 201, stored.json
    upload = stored.json["data"]["upload"]
    assert (upload["format"], upload["width"], upload["height"]) == ("webp", 64, 48)
    render = app.extensions["render"]
    with render.db.read() as session:
        row = session.get(RenderUpload, upload["id"])
    kept = render.storage.read(row.image_key)  # the row's checksum is the stored file's, and its key names it
    assert row.sha256 == hashlib.sha256(kept).hexdigest() and row.sha256 in row.image_key and row.file_size == len(kept)
    body = {"workflow": "img2img", "prompt": "p", "model": MODEL, "sourceImage": upload["ref"]}
    assert client.post("/api/generate", json=body, headers=user[1]).status_code == 202
    stranger = {"Authorization": f"Bearer {issue_token(user[0] + 1, 'stranger')}"}
    refused = client.post("/api/generate", json=body, headers=stranger)
    assert refused.status_code == 422 and refused.json["error"]["code"] == "SOURCE_NOT_FOUND"
    assert client.post("/api/uploads", headers=user[1], data={}).json["error"]["code"] == "NO_FILE"


@pytest.fixture
def gallery_works():
    """A stand-in for the gallery's ``GET /api/works/<id>``: ``works`` maps an id to the bearer
    token of its owner and its media key; anyone else sees it as a stranger would."""
    from flask import Flask, jsonify, request

    from tests.conftest import serve

    works: dict[int, tuple[str, str]] = {}
    gallery = Flask("gallery_works")

    @gallery.get("/api/works/<int:work_id>")
    def work(work_id: int):
        if work_id not in works:
            return jsonify({"success": False, "error": {"code": "WORK_NOT_FOUND", "message": "No such work.",
                                                        "details": None}}), 404
        owner_token, key = works[work_id]
        is_owner = request.headers.get("Authorization") == f"Bearer {owner_token}"
        return jsonify({"success": True, "data": {"work": {"id": work_id, "isOwner": is_owner,
                                                           "imageUrl": f"/media/{key}?exp=1&sig=x"}}})

    running = serve(gallery)
    yield running.url, works
    running.stop()


def test_a_work_is_a_source_only_for_its_owner(render_settings, render_config, queue, user, issue_token,
                                               live_worker, gallery_works):
    from shared.storage import content_key, make_storage

    gallery_url, works = gallery_works
    app = create_app(replace(render_settings, gallery_url=gallery_url), replace(render_config, queue_prefix=queue))
    image = _png(64, 48)
    key = make_storage(render_settings).put(content_key(image, "png", "works"), image)
    user_id, headers = user
    works[7] = (headers["Authorization"].split(" ", 1)[1], key)
    client = app.test_client()
    body = {"workflow": "img2img", "prompt": "p", "model": MODEL, "sourceImage": "work:7"}

    admitted = client.post("/api/generate", json=body, headers=headers)
    assert admitted.status_code == 202, admitted.json
    assert admitted.json["data"]["job"]["params"]["sourceImage"] == "work:7"
    stranger = {"Authorization": f"Bearer {issue_token(user_id + 1, 'stranger')}"}
    for who, ref in ((stranger, "work:7"), (headers, "work:8"), (headers, "work:seven"), (headers, "work:²"),
                     (headers, "work:٣"), (headers, "work:" + "9" * 40)):
        refused = client.post("/api/generate", json={**body, "sourceImage": ref}, headers=who)
        assert refused.status_code == 422 and refused.json["error"]["code"] == "SOURCE_NOT_FOUND", (ref, refused.json)
    app.extensions["render"].db.dispose()


def test_a_service_accounts_jobs_wait_in_the_lane_its_administrator_chose(app, user, live_worker, service_headers):
    """Over the queue API (``POST /internal/jobs``) a job waits in the batch lane unless the
    account's lane says interactive; an unknown lane is refused before anything is held."""
    from services.render import jobs

    client = app.test_client()

    def admit(**extra):
        return client.post("/internal/jobs", headers=service_headers, json={
            "userId": user[0], "params": BODY, "idempotencyKey": f"lane:{len(extra)}:{extra}", "maxActiveJobs": 4,
            **extra})

    default, interactive = admit(), admit(lane="interactive")
    assert (default.status_code, interactive.status_code) == (202, 202), (default.json, interactive.json)
    with app.extensions["render"].db.read() as session:
        lanes = [jobs.get_job(session, answer.json["data"]["job"]["id"]).lane for answer in (default, interactive)]
    assert lanes == ["batch", "interactive"]
    refused = admit(lane="vip")
    assert refused.status_code == 422 and "lane" in refused.json["error"]["details"]
