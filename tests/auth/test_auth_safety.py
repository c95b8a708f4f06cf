"""Names and bio against the term list: a blocked display name, bio or username is refused
with 422 CONTENT_REJECTED (nothing saved); a ``review`` match is saved and recorded."""
from __future__ import annotations

import pytest

from services.safety.app import create_app as create_safety_app
from shared.config import load_settings
from tests.safety_fixtures import add_term, audit_rows


@pytest.fixture
def safety(auth_env):
    app = create_safety_app(load_settings(auth_env))
    yield app
    app.extensions["db"].dispose()


@pytest.fixture
def listed(safety, auth_app):
    """Add a made-up term (unique to the test) to the list; returns it."""
    auth_app.extensions["auth"].content_filter.refresh_seconds = 0

    def _add(severity: str, category: str = "abuse") -> str:
        return add_term(safety, severity, category, "a")

    return _add



@pytest.mark.parametrize("field", ["displayName", "bio"])
def test_a_blocked_display_name_or_bio_is_refused_and_nothing_saved(make_account, listed, safety, field):
    account = make_account()
    term = listed("block")
    response = account.client.put("/api/users/profile", json={field: f"hi {term}"},
                                  headers={**account.headers, "Accept-Language": "zh-CN"})
    assert response.status_code == 422, response.json
    error = response.json["error"]
    assert error["code"] == "CONTENT_REJECTED" and error["details"]["field"] == field and term not in error["message"]
    assert account.call("GET", "/api/users/profile").json["data"]["user"][field] in ("", None)
    [row] = audit_rows(safety, action="blocked", actor_id=account.id)
    assert (row["source"], row["category"], row["subject"]) == (f"auth.{field}", "abuse", f"user:{account.id}")


def test_a_blocked_display_name_at_sign_up_creates_no_account(client, service_headers, listed, unique):
    term = listed("block")
    response = client.post("/api/users/register", headers=service_headers, json={
        "username": f"u_{unique}", "email": f"{unique}@example.com", "password": "long-password-1",
        "displayName": f"小{term}"})
    assert response.status_code == 422 and response.json["error"]["code"] == "CONTENT_REJECTED"
    login = client.post("/api/users/login", headers=service_headers,
                        json={"username": f"u_{unique}", "password": "long-password-1"})
    assert login.status_code == 401


def test_a_bio_for_review_is_saved_and_flagged(make_account, listed, safety):
    account = make_account()
    term = listed("review", "ads")
    response = account.call("PUT", "/api/users/profile", json={"bio": f"加我 {term}"})
    assert response.status_code == 200 and term in response.json["data"]["user"]["bio"]
    [row] = audit_rows(safety, action="flagged", actor_id=account.id)
    assert (row["source"], row["category"]) == ("auth.bio", "ads")
