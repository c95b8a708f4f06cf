"""What the create page, the history and the admin console read from the render domain: the
catalog described by the model registry, with presets, parameter help and the retention; the
history's filters; outputs' expiry; administrators' models, presets and cancels; the owners
of listed jobs; job summaries for the credits statement."""
from __future__ import annotations

import io
import json
import time
import uuid
from datetime import datetime, timedelta

import pytest
from PIL import Image

from services.render.catalog import publish_catalog
from services.render_worker.pipeline import build_context, render_job
from shared.events import redis_db, user_channel
from shared.storage import make_storage
from tests.render_fixtures import BODY, MODEL, balance


@pytest.fixture
def admin(issue_token):
    return {"Authorization": f"Bearer {issue_token(1, 'root', role='admin')}"}


@pytest.fixture
def described_model(redis, unique):
    """A model of its own on a live worker, so describing it touches no other test's catalog."""
    name = f"studio_{unique}.safetensors"
    publish_catalog(redis, {"workerId": "render@studio", "comfyuiUrl": "http://x", "comfyuiVersion": "0.3.64",
                            "checkpoints": [name], "samplers": ["euler"], "schedulers": ["normal"],
                            "upscale_models": [], "workflows": ["text2img"], "slots": 1, "updatedAt": "now"})
    return name


def picture(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(client, headers, width=1024, height=768) -> str:
    stored = client.post("/api/uploads", headers=headers, data={"image": (io.BytesIO(picture(width, height)), "p.png")})
    assert stored.status_code == 201, stored.json
    return stored.json["data"]["upload"]["ref"]


def test_the_catalog_carries_presets_help_and_the_retention(app, live_worker, render_config):
    data = app.test_client().get("/api/models").json["data"]
    assert {"displayNames", "description", "previewUrl", "recommended"} <= set(data["models"][0])
    assert data["outputRetentionDays"] == render_config.output_retention_days
    for name in ("stylePresets", "negativePresets"):
        assert data[name] and all(set(p) == {"key", "labels", "text"} and p["labels"]["zh"] and p["labels"]["en"]
                                  and p["text"] for p in data[name])
    text2img = next(w for w in data["workflows"] if w["name"] == "text2img")
    helps = {p["name"]: p["help"] for p in text2img["parameters"]}
    assert set(helps) == {p["name"] for p in text2img["parameters"]}
    assert helps["steps"]["zh"] and helps["steps"]["en"] and helps["seed"]["en"].startswith("The same seed")


def test_an_admin_describes_a_model_with_a_preview_and_recommended_settings(app, admin, described_model,
                                                                          render_settings):
    client = app.test_client()
    path = f"/api/admin/models/{described_model}"
    assert client.get(path, headers=admin).json["data"]["model"]["displayNames"] is None
    body = {"displayNames": {"zh": " 梦幻写实 ", "en": "Dream Real"}, "description": {"zh": "写实人像", "en": "Portraits"},
            "recommended": {"steps": 28, "cfgScale": 6.5, "sampler": "euler", "width": 512, "height": 768},
            "preview": upload(client, admin)}
    saved = client.put(path, json=body, headers=admin)
    assert saved.status_code == 200, saved.json
    model = saved.json["data"]["model"]
    assert model["displayNames"] == {"zh": "梦幻写实", "en": "Dream Real"}
    assert model["recommended"] == {"steps": 28, "cfgScale": 6.5, "sampler": "euler", "width": 512, "height": 768}
    preview = model["previewUrl"]
    assert preview.startswith("/media/previews/") and "?" not in preview  # public, like the catalog
    with Image.open(io.BytesIO(make_storage(render_settings).read(preview.removeprefix("/media/")))) as image:
        assert (image.format, image.size) == ("WEBP", (512, 384))

    listed = next(m for m in client.get("/api/models").json["data"]["models"] if m["name"] == described_model)
    assert {k: listed[k] for k in ("displayNames", "description", "previewUrl", "recommended")} == {
        k: model[k] for k in ("displayNames", "description", "previewUrl", "recommended")}
    assert described_model in [m["name"] for m in client.get("/api/admin/models", headers=admin).json["data"]["items"]]

    # A partial change keeps the rest; a null preview removes the picture and its file.
    renamed = client.put(path, json={"displayNames": {"en": "Dreamy"}, "preview": None}, headers=admin)
    model = renamed.json["data"]["model"]
    assert (model["displayNames"], model["previewUrl"], model["recommended"]["steps"]) == (
        {"zh": "", "en": "Dreamy"}, None, 28)
    assert not make_storage(render_settings).exists(preview.removeprefix("/media/"))


@pytest.mark.parametrize("body,field", [
    ({}, "_schema"),
    ({"recommended": {"width": 500}}, "recommended"),
    ({"recommended": {"steps": 0}}, "recommended"),
    ({"recommended": {"prompt": "x"}}, "recommended"),
    ({"recommended": {"steps": "20"}}, "recommended"),
    ({"displayNames": {"zh": "名" * 61}}, "displayNames"),
    ({"displayNames": {"fr": "Nom"}}, "displayNames"),
    ({"description": "plain"}, "description"),
    ({"preview": "https://example.com/x.png"}, "preview"),
    ({"name": "renamed"}, "name"),
])
def test_bad_model_descriptions_are_422(app, admin, described_model, body, field):
    response = app.test_client().put(f"/api/admin/models/{described_model}", json=body, headers=admin)
    assert response.status_code == 422 and list(response.json["error"]["details"]) == [field], response.json


def test_a_preview_must_be_the_admins_own_image(app, admin, user, described_model):
    client = app.test_client()
    someone_elses = upload(client, user[1])
    refused = client.put(f"/api/admin/models/{described_model}", json={"preview": someone_elses}, headers=admin)
    assert refused.status_code == 422 and refused.json["error"]["code"] == "SOURCE_NOT_FOUND"
    assert client.put(f"/api/admin/models/{described_model}", json={"displayNames": {"en": "x"}},
                      headers=user[1]).status_code == 403


def test_presets_are_replaced_one_list_at_a_time(app, admin):
    client = app.test_client()
    before = client.get("/api/admin/presets", headers=admin).json["data"]
    assert [p["key"] for p in before["stylePresets"]][:3] == ["photo", "cinematic", "anime"]
    negatives = [{"key": "hands", "labels": {"zh": "手部", "en": "Hands"}, "text": "bad hands"},
                 {"key": "blur", "labels": {"zh": "模糊", "en": "Blur"}, "text": " blurry "}]
    try:
        replaced = client.put("/api/admin/presets", json={"negativePresets": negatives}, headers=admin)
        assert replaced.status_code == 200, replaced.json
        assert replaced.json["data"]["negativePresets"] == [{**negatives[0]}, {**negatives[1], "text": "blurry"}]
        assert replaced.json["data"]["stylePresets"] == before["stylePresets"]
        catalog = client.get("/api/models").json["data"]
        assert [p["key"] for p in catalog["negativePresets"]] == ["hands", "blur"]
        for body in ({}, {"negativePresets": [negatives[0], negatives[0]]},
                     {"stylePresets": [{"key": "x", "labels": {"zh": "仅中文", "en": ""}, "text": "t"}]},
                     {"stylePresets": [{"key": "Bad Key", "labels": {"zh": "a", "en": "a"}, "text": "t"}]},
                     {"stylePresets": [{**negatives[0], "text": ""}]}, {"presets": []}):
            assert client.put("/api/admin/presets", json=body, headers=admin).status_code == 422, body
        assert client.get("/api/models").json["data"]["negativePresets"] == replaced.json["data"]["negativePresets"]
    finally:
        client.put("/api/admin/presets", json=before, headers=admin)


def test_the_history_filters_by_workflow_model_and_prompt(app, user, redis, unique):
    publish_catalog(redis, {"workerId": "render@b", "comfyuiUrl": "http://x", "comfyuiVersion": "0.3.64",
                            "checkpoints": [MODEL, "sdxl_demo.safetensors"], "samplers": ["euler"],
                            "schedulers": ["normal"], "upscale_models": [], "workflows": ["text2img", "img2img"],
                            "slots": 2, "updatedAt": "now"})
    user_id, headers = user
    client = app.test_client()
    source = upload(client, headers, 64, 64)
    bodies = [{**BODY, "prompt": "A Red Fox in the snow", "batchSize": 1},
              {**BODY, "prompt": "赛博朋克 城市 夜景", "model": "sdxl_demo.safetensors", "batchSize": 1},
              {"workflow": "img2img", "prompt": "a red kite", "model": MODEL, "sourceImage": source}]
    ids = []
    for body in bodies:
        admitted = client.post("/api/generate", json=body, headers=headers)
        assert admitted.status_code == 202, admitted.json
        ids.append(admitted.json["data"]["job"]["id"])
    client.delete(f"/api/jobs/{ids[0]}", headers=headers)

    def found(**query):
        response = client.get("/api/jobs", query_string={"pageSize": 50, **query}, headers=headers)
        assert response.status_code == 200, response.json
        return {item["id"] for item in response.json["data"]["items"]}, response.json["data"]["total"]

    assert found() == (set(ids), 3)
    assert found(workflow="img2img") == ({ids[2]}, 1)
    assert found(model="sdxl_demo.safetensors") == ({ids[1]}, 1)
    assert found(search="red") == ({ids[0], ids[2]}, 2)
    assert found(search="  RED   fox ") == ({ids[0]}, 1)
    assert found(search="城市") == ({ids[1]}, 1)
    assert found(search="red", status="cancelled") == ({ids[0]}, 1)
    assert found(search="red", workflow="text2img", model=MODEL) == ({ids[0]}, 1)
    assert found(search="100%") == (set(), 0)
    for query in ({"search": "x" * 101}, {"workflow": ""}, {"model": "m" * 256}, {"status": "done"}):
        assert client.get("/api/jobs", query_string=query, headers=headers).status_code == 422, query


def test_unsaved_outputs_say_when_they_expire(app, user, live_worker, render_settings, render_config):
    user_id, headers = user
    job_id = app.test_client().post("/api/generate", json=BODY, headers=headers).json["data"]["job"]["id"]
    queued = app.test_client().get(f"/api/jobs/{job_id}", headers=headers).json["data"]
    assert queued["expiresAt"] is None
    ctx = build_context(render_settings, render_config, "render@test")
    render_job(job_id, ctx)
    ctx.db.dispose()
    job = app.test_client().get(f"/api/jobs/{job_id}", headers=headers).json["data"]
    days = render_config.output_retention_days

    def parsed(value: str) -> datetime:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))

    expiries = [parsed(output["expiresAt"]) for output in job["outputs"]]
    assert len(expiries) == 2 and parsed(job["expiresAt"]) == min(expiries)
    started, finished = parsed(job["startedAt"]), parsed(job["finishedAt"])
    assert all(started + timedelta(days=days) <= expiry <= finished + timedelta(days=days) for expiry in expiries)


def test_an_admin_cancels_any_users_job_with_the_refund(app, admin, user, live_worker, render_settings, redis):
    user_id, headers = user
    client = app.test_client()
    job_id = client.post("/api/generate", json=BODY, headers=headers).json["data"]["job"]["id"]
    assert balance(render_settings, user_id) == {"available": 470, "held": 30}
    events = redis.pubsub()
    events.subscribe(user_channel(user_id, redis_db(redis)))
    try:
        cancelled = client.delete(f"/api/admin/jobs/{job_id}", headers=admin)
        assert cancelled.status_code == 200, cancelled.json
        assert (cancelled.json["data"]["status"], cancelled.json["data"]["userId"]) == ("cancelled", user_id)
        assert balance(render_settings, user_id) == {"available": 500, "held": 0}
        deadline, seen = time.monotonic() + 10, None
        while seen is None and time.monotonic() < deadline:
            message = events.get_message(timeout=1)
            if message and message["type"] == "message" and json.loads(message["data"])["type"] == "job.cancelled":
                seen = json.loads(message["data"])["data"]
    finally:
        events.close()
    assert seen == {"jobId": job_id, "refunded": 30, "images": 0, "charged": 0, "settled": True}
    again = client.delete(f"/api/admin/jobs/{job_id}", headers=admin)
    assert (again.status_code, again.json["error"]["code"]) == (409, "JOB_FINISHED")
    missing = client.delete(f"/api/admin/jobs/{uuid.uuid4().hex}", headers=admin)
    assert (missing.status_code, missing.json["error"]["code"]) == (404, "JOB_NOT_FOUND")
    assert client.delete(f"/api/admin/jobs/{job_id}", headers=headers).status_code == 403


def test_admin_job_lists_name_each_owner_from_one_directory_call(app_with_auth, render_settings, admin, user,
                                                                 issue_token, live_worker, auth_directory):
    _, entries, calls = auth_directory
    client = app_with_auth.test_client()
    other_id = user[0] + 1
    other = {"Authorization": f"Bearer {issue_token(other_id, 'other')}"}
    balance(render_settings, other_id)
    mine = client.post("/api/generate", json=BODY, headers=user[1]).json["data"]["job"]["id"]
    theirs = client.post("/api/generate", json=BODY, headers=other).json["data"]["job"]["id"]
    entries[user[0]] = {"id": user[0], "username": "xiaoming", "displayName": "小明"}
    listed = client.get("/api/admin/jobs", query_string={"status": "queued", "pageSize": 100}, headers=admin)
    assert listed.status_code == 200
    items = {item["id"]: item for item in listed.json["data"]["items"]}
    assert (items[mine]["username"], items[mine]["displayName"], items[mine]["userId"]) == ("xiaoming", "小明",
                                                                                               user[0])
    assert (items[theirs]["username"], items[theirs]["userId"]) == (None, other_id)
    assert len(calls) == 1 and {user[0], other_id} <= {int(i) for i in calls[0].split(",")}


def test_admin_job_lists_stand_when_auth_is_down(app, admin, user, live_worker, caplog):
    job_id = app.test_client().post("/api/generate", json=BODY, headers=user[1]).json["data"]["job"]["id"]
    listed = app.test_client().get("/api/admin/jobs", query_string={"pageSize": 100}, headers=admin)
    assert listed.status_code == 200
    item = next(item for item in listed.json["data"]["items"] if item["id"] == job_id)
    assert (item["userId"], item["username"]) == (user[0], None)
    assert "listed by id" in caplog.text


def test_job_summaries_for_the_credits_statement(app, user, live_worker, render_settings, render_config,
                                                 service_headers):
    user_id, headers = user
    client = app.test_client()
    done = client.post("/api/generate", json=BODY, headers=headers).json["data"]["job"]["id"]
    waiting = client.post("/api/generate", json={**BODY, "prompt": "later"}, headers=headers).json["data"]["job"]["id"]
    ctx = build_context(render_settings, render_config, "render@test")
    render_job(done, ctx)
    ctx.db.dispose()
    response = client.get(f"/internal/jobs?ids={waiting},{done},nope", headers=service_headers)
    assert response.status_code == 200
    summaries = {item["id"]: item for item in response.json["data"]["items"]}
    assert set(summaries) == {done, waiting}
    assert {k: summaries[done][k] for k in ("userId", "status", "workflow", "prompt", "imagesDelivered", "width",
                                            "height")} == {
        "userId": user_id, "status": "succeeded", "workflow": "text2img", "prompt": "a quiet harbour",
        "imagesDelivered": 2, "width": 64, "height": 64}
    assert summaries[done]["thumbnailUrl"].startswith("/media/thumbs/")
    assert (summaries[waiting]["status"], summaries[waiting]["thumbnailUrl"]) == ("queued", None)
    assert client.get(f"/internal/jobs?ids={done}").status_code == 403
    for query in ("", "ids=", "ids=a/b", "ids=" + ",".join(str(n) for n in range(101))):
        assert client.get(f"/internal/jobs?{query}", headers=service_headers).status_code == 422, query
