"""Fixtures for the auth service: a real credits service over HTTP, the auth app and its client."""
from __future__ import annotations

import threading
from typing import Iterator

import pytest
from werkzeug.serving import make_server

from shared.config import load_settings
from services.auth.app import create_app as create_auth_app
from services.credits.app import create_app as create_credits_app


@pytest.fixture
def credits_url(settings) -> Iterator[str]:
    """The real credits app served on a free port for the duration of one test."""
    app = create_credits_app(settings)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)
    app.extensions["db"].dispose()


@pytest.fixture
def auth_settings(settings_env, settings, credits_url):
    return load_settings({**settings_env, "CREDITS_URL": credits_url})


@pytest.fixture
def auth_app(auth_settings):
    app = create_auth_app(auth_settings)
    yield app
    app.extensions["db"].dispose()


@pytest.fixture
def client(auth_app):
    return auth_app.test_client()


@pytest.fixture
def register(client, service_headers, unique):
    """Register a user with valid defaults; keyword arguments override fields."""
    def _register(**fields):
        body = {"username": f"u_{unique}", "email": f"{unique}@example.com", "password": "secret123", **fields}
        return client.post("/api/users/register", json=body, headers=service_headers)
    return _register
