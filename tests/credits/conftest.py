"""Fixtures for the credits service: the app, a test client, fresh user and job ids, callers
with a user's or an admin's token, and stand-ins for the gateway's job lookup, auth's
user-id listing and the gallery's notifications, served over real HTTP."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Iterator

import pytest
from flask import Flask, jsonify, request
from marshmallow import ValidationError

from services.credits.app import create_app
from tests.conftest import TEST_SERVICE_TOKEN, serve
from services.gallery.schemas import InternalNotificationSchema

SERVICE_TOKEN = TEST_SERVICE_TOKEN


@dataclass
class FakePeers:
    """The gateway's ``/internal/jobs/<id>`` (from ``jobs``: id → status; missing → 404) and
    ``/internal/jobs?ids=`` (from ``summaries``: id → summary; ``summaries_broken`` answers 500;
    each call's ids are kept in ``summary_calls``),
    auth's ``/internal/users/ids`` (from ``user_ids``) and the gallery's
    ``POST /internal/notifications`` (validated with the gallery's own schema, kept in
    ``notifications``), with the service-token check."""

    url: str = ""
    jobs: dict[str, str] = field(default_factory=dict)
    user_ids: list[int] = field(default_factory=list)
    broken_jobs: set[str] = field(default_factory=set)
    summaries: dict[str, dict] = field(default_factory=dict)
    summaries_broken: bool = False
    summary_calls: list[list[str]] = field(default_factory=list)
    notifications: list[dict] = field(default_factory=list)


def _peers_app(fake: FakePeers) -> Flask:
    app = Flask("fake_peers")

    def error(status: int, code: str):
        return jsonify({"success": False, "error": {"code": code, "message": code, "details": None}}), status

    @app.before_request
    def _guard():
        if request.headers.get("X-Service-Token") != SERVICE_TOKEN:
            return error(403, "SERVICE_TOKEN_REQUIRED")
        return None

    @app.get("/internal/jobs/<job_id>")
    def job(job_id: str):
        if job_id in fake.broken_jobs:
            return "upstream exploded", 500
        if job_id not in fake.jobs:
            return error(404, "JOB_NOT_FOUND")
        return jsonify({"success": True, "data": {"id": job_id, "userId": 1, "status": fake.jobs[job_id]}})

    @app.get("/internal/jobs")
    def job_summaries():
        ids = request.args["ids"].split(",")
        fake.summary_calls.append(ids)
        if fake.summaries_broken:
            return "upstream exploded", 500
        items = [{"id": job_id, **fake.summaries[job_id]} for job_id in ids if job_id in fake.summaries]
        return jsonify({"success": True, "data": {"items": items}})

    @app.get("/internal/users/ids")
    def user_ids():
        after, limit = int(request.args["after"]), int(request.args["limit"])
        if not 0 < limit <= 1000:
            return error(422, "VALIDATION_ERROR")
        page = [user_id for user_id in sorted(fake.user_ids) if user_id > after][:limit]
        more = bool(page) and page[-1] < max(fake.user_ids)
        return jsonify({"success": True, "data": {"ids": page, "next": page[-1] if more else None}})

    @app.post("/internal/notifications")
    def notification():
        try:
            InternalNotificationSchema().load(request.get_json())
        except ValidationError:
            return error(422, "VALIDATION_ERROR")
        fake.notifications.append(request.get_json())
        return jsonify({"success": True, "data": {"notification": {"id": len(fake.notifications)}}}), 201

    return app


@pytest.fixture(scope="session")
def fake_peers() -> Iterator[FakePeers]:
    fake = FakePeers()
    running = serve(_peers_app(fake))
    fake.url = running.url
    yield fake
    running.stop()


@pytest.fixture
def settings_env(settings_env, fake_peers):
    return {**settings_env, "RENDER_URL": fake_peers.url, "AUTH_URL": fake_peers.url,
            "GALLERY_URL": fake_peers.url}


@pytest.fixture
def credits_app(settings):
    app = create_app(settings)
    yield app
    app.extensions["db"].dispose()
    app.extensions["redis"].close()


@pytest.fixture
def credits(credits_app):
    """The accounts and holds service, for calling domain functions directly."""
    return credits_app.extensions["credits"]


@pytest.fixture
def adjustments(credits_app):
    return credits_app.extensions["credits_adjustments"]


@pytest.fixture
def redeem_codes(credits_app):
    return credits_app.extensions["credits_redeem_codes"]


@pytest.fixture
def reports(credits_app):
    return credits_app.extensions["credits_reports"]


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
def as_user(service_headers, issue_token):
    """Headers of a call the gateway forwards for ``user_id`` (service token + bearer token)."""
    def _headers(user_id: int, role: str = "user") -> dict[str, str]:
        return {**service_headers, "Authorization": f"Bearer {issue_token(user_id, f'u{user_id}', role)}"}
    return _headers


@pytest.fixture
def admin(as_user, new_user_id):
    """Headers of a call made by an administrator."""
    return as_user(new_user_id(), role="admin")


@pytest.fixture
def credits_server(credits_app) -> Iterator[str]:
    """The credits app served over real HTTP on a free port; yields its base URL."""
    running = serve(credits_app)
    yield running.url
    running.stop()
