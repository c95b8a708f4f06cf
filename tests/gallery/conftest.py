"""Gallery fixtures: a stand-in gateway (render outputs) and auth directory serving canned
records over real HTTP, the gallery app pointed at them, and callers that carry the service
token and a user's JWT. Output files are real files in the app's storage."""
from __future__ import annotations

import io
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask, jsonify, request
from PIL import Image

from services.gallery.app import create_app
from tests.conftest import TEST_SERVICE_TOKEN, serve
from shared.storage import Storage, content_key

SERVICE_TOKEN = TEST_SERVICE_TOKEN


def image_bytes(fmt: str) -> bytes:
    """A small real image with random pixels, so every output has its own content key."""
    image = Image.frombytes("RGB", (8, 8), random.randbytes(8 * 8 * 3))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@dataclass
class FakeGateway:
    """Serves ``GET /internal/outputs/<id>``, ``GET /internal/jobs/<id>/outputs`` and auth's
    ``GET /internal/users/<id>`` and ``GET /internal/users?ids=``, with the service-token check;
    ``BROKEN_ID`` answers a bare 500 as a failing gateway would. Users not in ``users`` get a
    default entry."""

    BROKEN_ID = "broken"
    url: str = ""
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add_output(self, user_id: int, prompt: str = "a lighthouse at dusk, oil painting",
                   storage: Storage | None = None, job_id: str | None = None, index: int = 0,
                   **extra: Any) -> str:
        """Record an output; with ``storage``, its image and thumbnail are written there."""
        output_id = uuid.uuid4().hex
        png, webp = image_bytes("PNG"), image_bytes("WEBP")
        image_key, thumbnail_key = content_key(png, "png", "images"), content_key(webp, "webp", "thumbs")
        if storage is not None:
            storage.put(image_key, png)
            storage.put(thumbnail_key, webp)
        self.outputs[output_id] = {
            "id": output_id, "jobId": job_id or uuid.uuid4().hex, "userId": user_id, "index": index,
            "imageKey": image_key, "thumbnailKey": thumbnail_key,
            "width": 512, "height": 768, "fileSize": len(png), "sha256": image_key.rsplit("/", 1)[1][:64],
            "workflow": "text2img",
            "params": {"prompt": prompt, "negativePrompt": "blurry", "model": "sd15.safetensors",
                       "width": 512, "height": 768, "batchSize": 1, "steps": 20, "cfgScale": 7.0,
                       "seed": 42, "sampler": "euler", "scheduler": "normal"},
            "createdAt": "2026-01-01T00:00:00.000Z", **extra,
        }
        return output_id


def _gateway_app(fake: FakeGateway) -> Flask:
    app = Flask("fake_gateway")

    @app.get("/internal/outputs/<output_id>")
    def get_output(output_id: str):
        if request.headers.get("X-Service-Token") != SERVICE_TOKEN:
            return jsonify({"success": False, "error": {"code": "SERVICE_TOKEN_REQUIRED",
                                                        "message": "no", "details": None}}), 403
        if output_id == fake.BROKEN_ID:
            return "upstream exploded", 500
        record = fake.outputs.get(output_id)
        if record is None:
            return jsonify({"success": False, "error": {"code": "OUTPUT_NOT_FOUND",
                                                        "message": "Not found.", "details": None}}), 404
        return jsonify({"success": True, "data": record})

    @app.get("/internal/jobs/<job_id>/outputs")
    def job_outputs(job_id: str):
        items = [record for record in fake.outputs.values() if record["jobId"] == job_id]
        if not items:
            return jsonify({"success": False, "error": {"code": "JOB_NOT_FOUND",
                                                        "message": "Not found.", "details": None}}), 404
        return jsonify({"success": True, "data": {"items": items}})

    def entry(user_id: int) -> dict[str, Any]:
        return {"id": user_id, "username": f"user{user_id}", "avatarUrl": None, "role": "user", "isActive": True,
                **fake.users.get(user_id, {})}

    @app.get("/internal/users/<int:user_id>")
    def directory(user_id: int):
        return jsonify({"success": True, "data": entry(user_id)})

    @app.get("/internal/users")
    def directory_entries():
        ids = [int(part) for part in request.args["ids"].split(",")]
        return jsonify({"success": True, "data": {"items": [entry(user_id) for user_id in ids]}})

    return app


@pytest.fixture(scope="session")
def fake_gateway():
    fake = FakeGateway()
    running = serve(_gateway_app(fake))
    fake.url = running.url
    yield fake
    running.stop()


@pytest.fixture
def settings_env(settings_env, fake_gateway):
    return {**settings_env, "RENDER_URL": fake_gateway.url, "AUTH_URL": fake_gateway.url}


def close_app(app: Flask) -> None:
    """Close the gallery app's HTTP clients and database connections."""
    works = app.extensions["gallery"].works
    works.outputs.close()
    works.authors.close()
    app.extensions["db"].dispose()


@pytest.fixture
def app(settings):
    app = create_app(settings)
    yield app
    close_app(app)


class Caller:
    """Requests to the gallery as the gateway makes them: service token, and a user's token if any."""

    def __init__(self, app: Flask, service_headers: dict[str, str], token: str | None,
                 user_id: int | None = None, username: str | None = None) -> None:
        self.app = app
        self.headers = dict(service_headers)
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.user_id = user_id
        self.username = username

    def request(self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any):
        """``headers`` replace the caller's own for this call. A client per call, so callers may be
        used from several threads at once."""
        return self.app.test_client().open(path, method=method, headers=self.headers if headers is None
                                           else headers, **kwargs)

    def get(self, path: str, **kwargs: Any):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any):
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any):
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any):
        return self.request("DELETE", path, **kwargs)


@pytest.fixture
def anonymous(app, service_headers) -> Caller:
    return Caller(app, service_headers, None)


@pytest.fixture
def make_user(app, service_headers, issue_token):
    """A new signed-in caller with a user id no other test uses."""

    def _make(role: str = "user") -> Caller:
        user_id = uuid.uuid4().int % 2_000_000_000 + 1
        username = f"user{uuid.uuid4().hex[:8]}"
        return Caller(app, service_headers, issue_token(user_id, username, role), user_id, username)

    return _make


@pytest.fixture
def add_output(fake_gateway, app):
    """Record an output of ``user_id`` whose files exist in the app's storage; returns its id."""

    def _add(user_id: int, prompt: str = "a lighthouse at dusk, oil painting", **extra: Any) -> str:
        return fake_gateway.add_output(user_id, prompt, storage=app.extensions["gallery"].files.storage, **extra)

    return _add


@pytest.fixture
def save_work(add_output):
    """Save a fresh output of ``caller`` as a work and return the work."""

    def _save(caller: Caller, **fields: Any) -> dict[str, Any]:
        prompt = fields.pop("prompt", "a lighthouse at dusk, oil painting")
        body = {"outputId": add_output(caller.user_id, prompt), "title": "A work", **fields}
        response = caller.post("/api/works/save", json=body)
        assert response.status_code == 201, response.get_json()
        return response.get_json()["data"]["work"]

    return _save
