"""Safety fixtures: the safety app on the session's database and Redis, callers with a
user's or an administrator's token, and a content filter as other services run it."""
from __future__ import annotations

import uuid
from typing import Any

import pytest
from flask import Flask

from services.safety.app import create_app
from services.safety.client import ContentFilter
from tests.safety_fixtures import made_up_term


class Caller:
    def __init__(self, app: Flask, headers: dict[str, str]) -> None:
        self.app = app
        self.headers = headers

    def request(self, method: str, path: str, **kwargs: Any):
        return self.app.test_client().open(path, method=method, headers={**self.headers, **kwargs.pop("headers", {})},
                                           **kwargs)

    def get(self, path: str, **kwargs: Any):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any):
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any):
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any):
        return self.request("DELETE", path, **kwargs)


@pytest.fixture
def app(settings):
    app = create_app(settings)
    yield app
    app.extensions["db"].dispose()


@pytest.fixture
def admin(app, service_headers, issue_token) -> Caller:
    user_id = uuid.uuid4().int % 2_000_000_000 + 1
    return Caller(app, {**service_headers, "Authorization": f"Bearer {issue_token(user_id, 'moderator1', 'admin')}"})


@pytest.fixture
def user(app, service_headers, issue_token) -> Caller:
    user_id = uuid.uuid4().int % 2_000_000_000 + 1
    return Caller(app, {**service_headers, "Authorization": f"Bearer {issue_token(user_id, 'someone', 'user')}"})


@pytest.fixture
def content_filter(app) -> ContentFilter:
    """A filter as a caller's process keeps one: reads the list from Redis, re-checks at once."""
    return ContentFilter(app.extensions["redis"], None, refresh_seconds=0)


@pytest.fixture
def marker() -> str:
    """A made-up Chinese word no other test writes."""
    return made_up_term()
