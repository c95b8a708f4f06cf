"""Admission and the term list: a blocked prompt is refused with 422 CONTENT_REJECTED before
anything is held or queued, whoever submits it (a signed-in person, an API token, the queue
API's admission); a prompt matching a ``review`` entry is admitted and flagged."""
from __future__ import annotations

import datetime as dt
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from sqlalchemy import delete, text

from services.safety.app import create_app as create_safety_app
from tests.conftest import TEST_SERVICE_TOKEN
from services.safety.models import SafetyTerm
from tests.safety_fixtures import MODERATOR, add_term, audit_rows, made_up_term
from tests.render_fixtures import BODY, balance


@pytest.fixture
def safety(render_settings):
    app = create_safety_app(render_settings)
    yield app
    app.extensions["db"].dispose()


@pytest.fixture
def listed(safety):
    """Add a made-up term (unique to the test) to the list; returns it."""

    def _add(severity: str, category: str) -> str:
        return add_term(safety, severity, category, "q")

    return _add



def ledger_types(app, user_id: int) -> list[str]:
    """The user's credit ledger rows (credits shares the test database)."""
    with app.extensions["db"].engine.connect() as connection:
        rows = connection.execute(text("SELECT type FROM credit_ledger WHERE user_id = :u ORDER BY id"), {"u": user_id})
        return [row[0] for row in rows]


def api_token_headers(settings, user_id: int) -> dict[str, str]:
    """What the gateway sends on for a ``pat_…`` API token with the scope ``generate``: an access
    token auth signed with ``scopes`` and ``pat``."""
    key = load_pem_private_key(settings.jwt_private_key_path.read_bytes(), password=None)
    now = dt.datetime.now(dt.timezone.utc)
    claims = {"sub": str(user_id), "username": f"u{user_id}", "role": "user", "type": "access",
              "jti": uuid.uuid4().hex, "iat": now, "exp": now + dt.timedelta(minutes=5),
              "scopes": ["generate"], "pat": uuid.uuid4().hex}
    return {"Authorization": f"Bearer {jwt.encode(claims, key, algorithm='RS256')}"}


def submit(app, render_settings, path: str, user_id: int, headers: dict[str, str], body: dict):
    client = app.test_client()
    if path == "session":
        return client.post("/api/generate", json=body, headers={**headers, "Accept-Language": "zh-CN"})
    if path == "api-token":
        return client.post("/api/generate", json=body,
                           headers={**api_token_headers(render_settings, user_id), "Accept-Language": "zh-CN"})
    return client.post("/internal/jobs", headers={"X-Service-Token": TEST_SERVICE_TOKEN}, json={
        "userId": user_id, "params": body, "idempotencyKey": f"q:{uuid.uuid4().hex}", "maxActiveJobs": 4})


@pytest.mark.parametrize("path", ["session", "api-token", "queue-api"])
@pytest.mark.parametrize("field", ["prompt", "negativePrompt"])
def test_a_blocked_prompt_is_refused_before_any_hold(app, user, redis, queue, live_worker, render_settings, safety,
                                                      listed, field, path):
    user_id, headers = user
    app.extensions["render"].content_filter.refresh_seconds = 0
    term = listed("block", "violence")
    disguised = " ".join(term.upper())  # spaced out and upper-cased: still the listed term
    response = submit(app, render_settings, path, user_id, headers, {**BODY, field: f"a castle, {disguised}"})
    assert response.status_code == 422, response.json
    error = response.json["error"]
    assert error["code"] == "CONTENT_REJECTED" and "暴力" in error["message"] and term not in error["message"]
    assert error["details"] == {"field": field, "category": "violence", "categoryName": "暴力血腥"}
    assert balance(render_settings, user_id) == {"available": 500, "held": 0}
    assert ledger_types(app, user_id) == ["signup_bonus"], "nothing was held, not even held and released"
    assert redis.llen(f"{queue}.text2img") == 0
    listed_jobs = app.test_client().get("/api/jobs", headers=headers).json["data"]
    assert listed_jobs["total"] == 0
    [row] = audit_rows(safety, action="blocked", actor_id=user_id)
    assert (row["source"], row["category"], row["subject"]) == (f"render.{field}", "violence", "workflow:text2img")


def test_a_prompt_for_review_is_admitted_and_flagged(app, user, live_worker, render_settings, safety, listed):
    user_id, headers = user
    app.extensions["render"].content_filter.refresh_seconds = 0
    term = listed("review", "sexual")
    response = app.test_client().post("/api/generate", json={**BODY, "prompt": f"portrait, {term}"}, headers=headers)
    assert response.status_code == 202, response.json
    assert balance(render_settings, user_id) == {"available": 470, "held": 30}
    [row] = audit_rows(safety, action="flagged", actor_id=user_id)
    assert (row["source"], row["category"], row["severity"]) == ("render.prompt", "sexual", "review")


def test_with_ten_thousand_terms_listed_a_blocked_prompt_still_never_reaches_the_queue_or_the_ledger(
        app, user, redis, queue, live_worker, render_settings, safety):
    user_id, headers = user
    app.extensions["render"].content_filter.refresh_seconds = 0
    terms, note = safety.extensions["safety_terms"], f"bulk-{uuid.uuid4().hex}"
    words = [made_up_term(f"k{i}") for i in range(10_000)]
    items = [{"text": word, "kind": "term", "category": "fraud", "severity": "block", "note": note} for word in words]
    assert terms.bulk(MODERATOR, {"items": items})["added"] == 10_000
    try:
        response = submit(app, render_settings, "session", user_id, headers,
                          {**BODY, "prompt": f"a harbour at dusk, {words[7777][:2]}\u200b{words[7777][2:]}"})
        assert response.status_code == 422 and response.json["error"]["details"]["category"] == "fraud"
        assert ledger_types(app, user_id) == ["signup_bonus"] and redis.llen(f"{queue}.text2img") == 0
        clean = submit(app, render_settings, "session", user_id, headers, BODY)
        assert clean.status_code == 202, clean.json
    finally:  # the list is the session's: leave it as it was for the tests that follow
        with safety.extensions["db"].transaction() as session:
            session.execute(delete(SafetyTerm).where(SafetyTerm.note == note))
        terms.publish()
