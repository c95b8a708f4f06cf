"""Admission and the term list: a blocked prompt is refused with 422 CONTENT_REJECTED before
anything is held or queued; a prompt matching a ``review`` entry is admitted and flagged."""
from __future__ import annotations


import pytest

from services.safety.app import create_app as create_safety_app
from tests.safety_fixtures import add_term, audit_rows
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



@pytest.mark.parametrize("field", ["prompt", "negativePrompt"])
def test_a_blocked_prompt_is_refused_before_any_hold(app, user, redis, queue, live_worker, render_settings, safety,
                                                      listed, field):
    user_id, headers = user
    app.extensions["render"].content_filter.refresh_seconds = 0
    term = listed("block", "violence")
    disguised = " ".join(term.upper())  # spaced out and upper-cased: still the listed term
    response = app.test_client().post("/api/generate", json={**BODY, field: f"a castle, {disguised}"},
                                      headers={**headers, "Accept-Language": "zh-CN"})
    assert response.status_code == 422, response.json
    error = response.json["error"]
    assert error["code"] == "CONTENT_REJECTED" and "暴力" in error["message"] and term not in error["message"]
    assert error["details"] == {"field": field, "category": "violence", "categoryName": "暴力血腥"}
    assert balance(render_settings, user_id) == {"available": 500, "held": 0}
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
