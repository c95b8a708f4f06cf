"""Refresh rotation, reuse detection, expiry and logout."""
from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select

from shared.db import utcnow
from services.auth.models import RefreshToken
from services.auth.tokens import secret_digest


def refresh(client, service_headers, token):
    return client.post("/api/users/token/refresh", headers=service_headers, json={"refreshToken": token})


def test_refresh_rotates_the_pair(make_account, client, service_headers):
    account = make_account()
    first = account.refresh_token
    rotated = refresh(client, service_headers, first)
    assert rotated.status_code == 200
    data = rotated.json["data"]
    assert data["refreshToken"] != first and data["accessToken"] != account.access_token
    assert data["user"]["id"] == account.id
    account.use(data)
    assert account.call("GET", "/api/users/profile").status_code == 200
    again = refresh(client, service_headers, data["refreshToken"])
    assert again.status_code == 200


def test_reusing_a_spent_refresh_token_revokes_the_whole_family(make_account, client, service_headers, auth_app):
    account = make_account()
    stolen = account.refresh_token
    other_session = account.login()
    account.use(refresh(client, service_headers, stolen).json["data"])  # the legitimate client rotates

    reuse = refresh(client, service_headers, stolen)  # the thief presents the spent copy
    assert reuse.status_code == 401
    assert reuse.json["error"]["code"] == "TOKEN_REUSED"
    # Both halves of the family are dead: the newest refresh token and its access token.
    latest = refresh(client, service_headers, account.refresh_token)
    assert (latest.status_code, latest.json["error"]["code"]) == (401, "TOKEN_REVOKED")
    profile = account.call("GET", "/api/users/profile")
    assert (profile.status_code, profile.json["error"]["code"]) == (401, "TOKEN_REVOKED")
    # Another session of the same user is untouched.
    assert refresh(client, service_headers, other_session["refreshToken"]).status_code == 200
    with auth_app.extensions["db"].read() as session:
        rows = session.scalars(select(RefreshToken).where(RefreshToken.user_id == account.id)).all()
    family = {row.family_id for row in rows if row.token_hash == secret_digest(stolen)}
    assert all(row.revoked_at is not None for row in rows if row.family_id in family)


def test_unknown_expired_and_malformed_refresh_tokens(make_account, client, service_headers, auth_app):
    account = make_account()
    unknown = refresh(client, service_headers, "x" * 43)
    assert (unknown.status_code, unknown.json["error"]["code"]) == (401, "REFRESH_TOKEN_INVALID")
    with auth_app.extensions["db"].transaction() as session:
        row = session.scalar(select(RefreshToken).where(
            RefreshToken.token_hash == secret_digest(account.refresh_token)))
        row.expires_at = utcnow() - timedelta(seconds=1)
    expired = refresh(client, service_headers, account.refresh_token)
    assert (expired.status_code, expired.json["error"]["code"]) == (401, "REFRESH_TOKEN_EXPIRED")
    for body in ({}, {"refreshToken": 123}, {"refreshToken": ""}, {"refreshToken": "a" * 201},
                 {"refreshToken": "abc", "extra": 1}, {"refreshToken": "ab\x00c"}):
        response = client.post("/api/users/token/refresh", headers=service_headers, json=body)
        assert response.status_code == 422, body


def test_logout_ends_the_session_and_its_access_token(make_account, client, service_headers):
    account = make_account()
    other = account.login()
    response = account.call("POST", "/api/users/logout")
    assert response.status_code == 200
    assert response.json["data"] == {"signedOut": True}
    assert account.call("GET", "/api/users/profile").json["error"]["code"] == "TOKEN_REVOKED"
    assert refresh(client, service_headers, account.refresh_token).json["error"]["code"] == "TOKEN_REVOKED"
    # The other device stays signed in.
    headers = {**service_headers, "Authorization": f"Bearer {other['accessToken']}"}
    assert client.get("/api/users/profile", headers=headers).status_code == 200


def test_logout_with_only_the_refresh_token(make_account, client, service_headers):
    account = make_account()
    response = client.post("/api/users/logout", headers=service_headers,
                           json={"refreshToken": account.refresh_token})
    assert response.status_code == 200
    assert refresh(client, service_headers, account.refresh_token).status_code == 401
    # The access token issued with it is revoked too (it may still be alive).
    assert account.call("GET", "/api/users/profile").json["error"]["code"] == "TOKEN_REVOKED"
    nothing = client.post("/api/users/logout", headers=service_headers)
    assert (nothing.status_code, nothing.json["error"]["code"]) == (401, "NO_TOKEN")


def test_disabled_user_cannot_refresh(make_account, client, service_headers):
    admin, account = make_account("admin"), make_account()
    assert admin.call("POST", f"/api/admin/users/{account.id}/disable").status_code == 200
    response = refresh(client, service_headers, account.refresh_token)
    assert (response.status_code, response.json["error"]["code"]) == (401, "TOKEN_REVOKED")


def test_concurrent_refreshes_of_one_token_rotate_once(make_account, auth_app, service_headers):
    """Two refreshes of the same token at once: one rotates, the other is seen as reuse."""
    account = make_account()
    barrier = threading.Barrier(4)
    results: list[tuple[int, str | None]] = []

    def attempt() -> None:
        client = auth_app.test_client()
        barrier.wait()
        response = refresh(client, service_headers, account.refresh_token)
        results.append((response.status_code, (response.json.get("error") or {}).get("code")))

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    winners = [result for result in results if result[0] == 200]
    losers = [code for status, code in results if status == 401]
    assert len(winners) == 1 and len(losers) == 3
    # The first loser reveals the reuse and revokes the family; later ones find it revoked.
    assert "TOKEN_REUSED" in losers and set(losers) <= {"TOKEN_REUSED", "TOKEN_REVOKED"}
