"""Fixtures of the render API's tests: the app on a private queue, Redis without other
workers' catalogs, a live worker's catalog, and a user with a credit account."""
from __future__ import annotations

import random
from dataclasses import replace

import pytest

from services.credits.client import CreditsClient
from services.render.app import create_app
from services.render.catalog import alive_key, publish_catalog
from services.render_worker.scheduler import Scheduler
from shared.events import redis_client
from shared.tasks import make_celery
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
