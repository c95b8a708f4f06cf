"""The gateway's render routes, through a Flask app built like the gateway builds it."""
from __future__ import annotations

import json
import random

import pytest
from flask import Flask

from services.credits.client import CreditsClient
from services.gateway import render_api
from services.render_worker.catalog import publish_catalog
from services.render_worker.pipeline import build_context, render_job
from shared.events import redis_client
from shared.tasks import RENDER_RUN_JOB
from shared.web import init_service_app

from .conftest import MODEL


@pytest.fixture
def queue(render_settings, unique):
    """A private queue name, so the test can read exactly the messages it caused."""
    return f"render-test-{unique}"


@pytest.fixture
def app(render_settings, queue):
    from dataclasses import replace

    settings = replace(render_settings, render_queue=queue)
    app = Flask(__name__)
    init_service_app(app, settings, internal=False)
    render_api.init_app(app, settings)
    yield app
    app.extensions["render"].db.dispose()


@pytest.fixture
def redis(render_settings):
    client = redis_client(render_settings.redis_url)
    for key in client.scan_iter(match="catalog:worker:*"):
        client.delete(key)
    yield client
    for key in client.scan_iter(match="catalog:worker:*"):
        client.delete(key)


@pytest.fixture
def live_worker(redis):
    publish_catalog(redis, {"workerId": "render@a", "comfyuiUrl": "http://x", "comfyuiVersion": "0.3.64",
                            "checkpoints": [MODEL], "samplers": ["euler"], "schedulers": ["normal"],
                            "workflows": ["text2img"], "updatedAt": "now"})


@pytest.fixture
def user(render_settings, issue_token):
    user_id = random.randint(10**6, 10**9)
    CreditsClient(render_settings.credits_url, render_settings.service_token).open_account(user_id)
    return user_id, {"Authorization": f"Bearer {issue_token(user_id, f'u{user_id}')}"}


def balance(render_settings, user_id) -> dict:
    return CreditsClient(render_settings.credits_url, render_settings.service_token).open_account(user_id)


BODY = {"prompt": "a quiet harbour", "model": MODEL, "size": "64x64", "batchSize": 2, "steps": 4}


def test_generate_admits_holds_and_queues_after_commit(app, user, redis, queue, live_worker, render_settings):
    user_id, headers = user
    response = app.test_client().post("/api/generate", json=BODY, headers=headers)
    assert response.status_code == 202, response.json
    data = response.json["data"]
    job = data["job"]
    assert job["status"] == "queued" and job["imagesRequested"] == 2 and job["pricePerImage"] == 15
    assert job["params"]["width"] == 64 and job["params"]["seed"] >= 0 and "warnings" not in data
    assert isinstance(data["queuePosition"], int)
    assert balance(render_settings, user_id) == {"available": 470, "held": 30}
    messages = [json.loads(raw) for raw in redis.lrange(queue, 0, -1)]
    assert [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages] == [(RENDER_RUN_JOB, f"['{job['id']}']")]

    fetched = app.test_client().get(f"/api/jobs/{job['id']}", headers=headers)
    assert fetched.status_code == 200 and fetched.json["data"]["id"] == job["id"]
    listed = app.test_client().get("/api/jobs?status=queued&pageSize=5", headers=headers).json["data"]
    assert [item["id"] for item in listed["items"]] == [job["id"]] and listed["total"] == 1


def test_generate_without_any_worker_still_admits_with_a_warning(app, user, redis):
    response = app.test_client().post("/api/generate", json=BODY, headers=user[1])
    assert response.status_code == 202 and response.json["data"]["warnings"]


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
    client = app.test_client()
    for _ in range(8):  # 8 × 60 = 480 of 500
        assert client.post("/api/generate", json={**BODY, "batchSize": 4}, headers=headers).status_code == 202
    response = client.post("/api/generate", json={**BODY, "batchSize": 4}, headers=headers)
    assert response.status_code == 402
    assert response.json["error"]["code"] == "INSUFFICIENT_CREDITS"
    assert response.json["error"]["details"]["shortfall"] == 40
    assert client.get("/api/jobs?pageSize=100", headers=headers).json["data"]["total"] == 8


def test_same_idempotency_key_gives_the_same_job_charged_once(app, user, live_worker, render_settings):
    user_id, headers = user
    client = app.test_client()
    keyed = {**headers, "Idempotency-Key": "k-1"}
    first = client.post("/api/generate", json=BODY, headers=keyed)
    again = client.post("/api/generate", json=BODY, headers=keyed)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json["data"]["job"]["id"] == again.json["data"]["job"]["id"]
    assert balance(render_settings, user_id) == {"available": 470, "held": 30}


def test_cancel_of_a_queued_job_refunds_and_a_finished_one_is_409(app, user, live_worker, render_settings, redis):
    user_id, headers = user
    client = app.test_client()
    job_id = client.post("/api/generate", json=BODY, headers=headers).json["data"]["job"]["id"]
    cancelled = client.delete(f"/api/jobs/{job_id}", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json["data"]["status"] == "cancelled"
    assert balance(render_settings, user_id) == {"available": 500, "held": 0}
    assert client.delete(f"/api/jobs/{job_id}", headers=headers).json["error"]["code"] == "JOB_FINISHED"
    ctx = build_context(render_settings, "render@test")
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


def test_internal_outputs_needs_the_service_token(app, user, live_worker, render_settings, service_headers):
    user_id, headers = user
    job_id = app.test_client().post("/api/generate", json=BODY, headers=headers).json["data"]["job"]["id"]
    ctx = build_context(render_settings, "render@test")
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
    assert job["outputs"][0]["imageUrl"] == f"/media/{record['imageKey']}"
    missing = client.get("/internal/outputs/nope", headers=service_headers)
    assert missing.status_code == 404 and missing.json["error"]["code"] == "OUTPUT_NOT_FOUND"


def test_models_lists_the_live_catalog(app, live_worker):
    data = app.test_client().get("/api/models").json["data"]
    assert data["models"] == [{"name": MODEL, "workers": ["render@a"]}] and data["liveWorkers"] == 1
    assert data["samplers"] == ["euler"] and data["workflows"][0]["name"] == "text2img"
    assert all("bind" not in p for p in data["workflows"][0]["parameters"])
