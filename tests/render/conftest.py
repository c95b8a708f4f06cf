"""Fixtures of the render API's tests: the app on a private queue, Redis without other
workers' catalogs, a live worker's catalog, a user with a credit account, and a stand-in for
auth's user directory."""
from __future__ import annotations

import random
from dataclasses import replace

import pytest
from flask import Flask, jsonify, request

from services.credits.client import CreditsClient
from services.render.app import create_app
from services.render.catalog import alive_key, publish_catalog
from services.render_worker.scheduler import Scheduler
from shared.events import redis_client
from shared.tasks import make_celery
from tests.conftest import TEST_SERVICE_TOKEN, serve
from tests.render_fixtures import MODEL


@pytest.fixture
def queue(render_settings, unique):
    """A private queue name, so the test can read exactly the messages it caused."""
    return f"render-test-{unique}"


@pytest.fixture
def app(render_settings, render_config, queue):
    app = create_app(render_settings, replace(render_config, queue_prefix=queue))
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
    client.connection_pool.disconnect()


@pytest.fixture
def live_worker(redis):
    publish_catalog(redis, {"workerId": "render@a", "comfyuiUrl": "http://x", "comfyuiVersion": "0.3.64",
                            "checkpoints": [MODEL], "samplers": ["euler"], "schedulers": ["normal"],
                            "upscale_models": [], "workflows": ["text2img", "img2img"], "slots": 2,
                            "updatedAt": "now"})
    redis.set(alive_key("render@a"), "1", ex=30)


@pytest.fixture
def scheduler(app, render_settings):
    """The scheduler process's passes, run by the test (``run_once``) against the app's queue."""
    service = app.extensions["render"]
    celery = make_celery(render_settings, "render-test")
    yield Scheduler(service.config, service.db, service.events, celery, service.templates, "scheduler@test")
    celery.close()  # its broker connections: left to the garbage collector they warn as unclosed sockets


@pytest.fixture
def user(render_settings, issue_token):
    user_id = random.randint(10**6, 10**9)
    CreditsClient(render_settings.credits_url, render_settings.service_token).open_account(user_id)
    return user_id, {"Authorization": f"Bearer {issue_token(user_id, f'u{user_id}')}"}


@pytest.fixture
def auth_directory():
    """A stand-in for auth's directory (``GET /internal/users?ids=`` and ``/internal/users/<id>``):
    ``entries`` maps ids to entries; each list call's ids are kept in ``calls``."""
    entries: dict[int, dict] = {}
    calls: list[str] = []
    directory = Flask("auth_directory")

    @directory.before_request
    def service_token():
        if request.headers.get("X-Service-Token") != TEST_SERVICE_TOKEN:
            return jsonify({"success": False, "error": {"code": "SERVICE_TOKEN_REQUIRED"}}), 403

    @directory.get("/internal/users")
    def users():
        calls.append(request.args["ids"])
        ids = [int(i) for i in request.args["ids"].split(",")]
        return jsonify({"success": True, "data": {"items": [entries[i] for i in ids if i in entries]}})

    @directory.get("/internal/users/<int:user_id>")
    def one_user(user_id: int):
        if user_id not in entries:
            return jsonify({"success": False, "error": {"code": "USER_NOT_FOUND", "message": "No such user.",
                                                        "details": {}}}), 404
        return jsonify({"success": True, "data": entries[user_id]})

    running = serve(directory)
    yield running.url, entries, calls
    running.stop()


@pytest.fixture
def app_with_auth(render_settings, render_config, queue, auth_directory):
    """The app on the same private queue as ``app``, asking ``auth_directory`` about users."""
    app = create_app(replace(render_settings, auth_url=auth_directory[0]), replace(render_config, queue_prefix=queue))
    yield app
    app.extensions["render"].db.dispose()
