"""Fixtures for the credits service: the app, a test client, and fresh user ids."""
from __future__ import annotations

import threading
import uuid
from typing import Iterator

import pytest
from werkzeug.serving import make_server

from services.credits.app import create_app


@pytest.fixture
def credits_app(settings):
    app = create_app(settings)
    yield app
    app.extensions["db"].dispose()


@pytest.fixture
def client(credits_app):
    return credits_app.test_client()


@pytest.fixture
def new_user_id():
    """A user id no other test uses (the tables are shared by the whole session)."""
    return lambda: uuid.uuid4().int % 10**12 + 1


@pytest.fixture
def job_id(unique) -> str:
    return f"job-{unique}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def credits_server(credits_app) -> Iterator[str]:
    """The credits app served over real HTTP on a free port; yields its base URL."""
    server = make_server("127.0.0.1", 0, credits_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)
