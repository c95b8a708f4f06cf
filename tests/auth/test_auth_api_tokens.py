"""API tokens: created with scopes and an expiry, shown once, stored hashed, listed with
their last use, exchanged for scoped access tokens, refused by account routes, revoked at
once; and service accounts, which never sign in with a password."""
from __future__ import annotations

import hashlib
import time

import jwt
from sqlalchemy import select

from services.auth.models import ApiToken
from shared.tokens import SCOPES

SCOPED = {"name": "ci", "scopes": ["generate", "credits:read"], "expiresInDays": 30}


def _exchange(client, service_headers, token: str):
    return client.post("/internal/tokens/exchange", headers=service_headers, json={"token": token})


def test_a_token_is_shown_once_and_kept_only_as_a_digest(make_account, auth_app, client, service_headers):
    owner = make_account()
    created = owner.call("POST", "/api/tokens", json=SCOPED)
    assert created.status_code == 201
    token, listed = created.json["data"]["token"], created.json["data"]["apiToken"]
    assert token.startswith("pat_") and len(token) > 40
    assert listed["scopes"] == ["credits:read", "generate"] and listed["prefix"] == token[:12]
    assert listed["lastUsedAt"] is None and listed["expiresAt"] is not None
    with auth_app.extensions["db"].read() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.id == listed["id"]))
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(owner.call("GET", "/api/tokens").json), "never listed again"

    exchanged = _exchange(client, service_headers, token)
    assert exchanged.status_code == 200
    data = exchanged.json["data"]
    assert (data["userId"], data["tokenId"], data["scopes"]) == (owner.id, listed["id"], ["credits:read", "generate"])
    assert data["expiresAt"] <= time.time() + 15 * 60 + 1
    assert owner.call("GET", "/api/tokens").json["data"]["items"][0]["lastUsedAt"] is not None


def test_the_exchanged_token_is_refused_by_account_routes(make_account, client, service_headers):
    owner = make_account()
    token = owner.call("POST", "/api/tokens", json={"name": "all", "scopes": list(SCOPES)}).json["data"]["token"]
    access = _exchange(client, service_headers, token).json["data"]["accessToken"]
    headers = {**service_headers, "Authorization": f"Bearer {access}"}
    for method, path, body in (("GET", "/api/users/profile", None), ("PUT", "/api/users/profile", {"bio": "x"}),
                               ("PUT", "/api/users/password", {"currentPassword": owner.password,
                                                                "newPassword": "another123"}),
                               ("GET", "/api/tokens", None), ("POST", "/api/tokens", SCOPED),
                               ("DELETE", "/api/users/me", {"password": owner.password}),
                               ("POST", "/api/users/logout", {})):
        answer = client.open(path, method=method, headers=headers, json=body)
        assert answer.status_code == 403 and answer.json["error"]["code"] == "INSUFFICIENT_SCOPE", (method, path)
    assert owner.call("GET", "/api/users/profile").status_code == 200, "the owner's session is untouched"


def test_revoking_stops_the_exchanged_token_at_once(make_account, client, service_headers, redis_conn):
    owner = make_account()
    created = owner.call("POST", "/api/tokens", json=SCOPED).json["data"]
    access = _exchange(client, service_headers, created["token"]).json["data"]["accessToken"]
    revoked = owner.call("DELETE", f"/api/tokens/{created['apiToken']['id']}")
    assert revoked.status_code == 200 and revoked.json["data"]["apiToken"]["revokedAt"] is not None
    assert redis_conn.get(f"revoked:pat:{created['apiToken']['id']}") == "1"
    # The access token exchanged before the revocation is refused by every service's blocklist check.
    answer = client.get("/api/users/profile", headers={**service_headers, "Authorization": f"Bearer {access}"})
    assert answer.status_code == 401 and answer.json["error"]["code"] == "TOKEN_REVOKED"
    again = _exchange(client, service_headers, created["token"])
    assert again.status_code == 401 and again.json["error"]["code"] == "TOKEN_REVOKED"
    assert owner.call("DELETE", f"/api/tokens/{created['apiToken']['id']}").status_code == 200, "idempotent"


def test_expired_unknown_and_disabled_owners_tokens_are_refused(make_account, auth_app, client, service_headers):
    owner, admin = make_account(), make_account(role="admin")
    token = owner.call("POST", "/api/tokens", json=SCOPED).json["data"]["token"]
    assert _exchange(client, service_headers, "pat_nothing").json["error"]["code"] == "TOKEN_INVALID"
    with auth_app.extensions["db"].transaction() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.user_id == owner.id))
        row.expires_at = row.created_at
    assert _exchange(client, service_headers, token).json["error"]["code"] == "TOKEN_EXPIRED"
    fresh = owner.call("POST", "/api/tokens", json={**SCOPED, "expiresInDays": None}).json["data"]
    assert fresh["apiToken"]["expiresAt"] is None
    assert admin.call("POST", f"/api/admin/users/{owner.id}/disable").status_code == 200
    answer = _exchange(client, service_headers, fresh["token"])
    assert answer.status_code == 401 and answer.json["error"]["code"] == "TOKEN_REVOKED"


def test_input_rules_and_whose_tokens(make_account, client, service_headers):
    owner, other, admin = make_account(), make_account(), make_account(role="admin")
    for body in ({"name": "x", "scopes": []}, {"name": "x", "scopes": ["admin"]}, {"name": "", "scopes": ["generate"]},
                 {"name": "x", "scopes": ["generate"], "expiresInDays": 0}, {"name": "x"}):
        assert owner.call("POST", "/api/tokens", json=body).status_code == 422, body
    token_id = owner.call("POST", "/api/tokens", json=SCOPED).json["data"]["apiToken"]["id"]
    assert other.call("DELETE", f"/api/tokens/{token_id}").json["error"]["code"] == "TOKEN_NOT_FOUND"
    assert other.call("GET", f"/api/tokens?userId={owner.id}").json["error"]["code"] == "ADMIN_REQUIRED"
    refused = admin.call("POST", "/api/tokens", json={**SCOPED, "userId": owner.id})
    assert refused.status_code == 403 and refused.json["error"]["code"] == "NOT_A_SERVICE_ACCOUNT"


def test_service_accounts_never_sign_in_and_admins_manage_their_tokens(make_account, client, service_headers,
                                                                       unique):
    admin = make_account(role="admin")
    name = f"svc_{unique}"
    created = client.post("/internal/service-accounts", headers=service_headers, json={"username": name})
    again = client.post("/internal/service-accounts", headers=service_headers, json={"username": name.upper()})
    assert created.status_code == 201
    assert again.status_code == 200 and again.json["data"]["user"]["id"] == created.json["data"]["user"]["id"]
    account = created.json["data"]["user"]
    assert account["kind"] == "service" and account["email"].endswith("@service.invalid")
    taken = client.post("/internal/service-accounts", headers=service_headers, json={"username": admin.username})
    assert taken.status_code == 409 and taken.json["error"]["code"] == "USERNAME_TAKEN"

    login = client.post("/api/users/login", headers=service_headers,
                        json={"username": name, "password": "anything1"})
    assert login.status_code == 401 and login.json["error"]["code"] == "INVALID_CREDENTIALS"

    made = admin.call("POST", "/api/tokens", json={**SCOPED, "userId": account["id"]})
    assert made.status_code == 201 and made.json["data"]["apiToken"]["userId"] == account["id"]
    exchanged = _exchange(client, service_headers, made.json["data"]["token"]).json["data"]
    claims = jwt.decode(exchanged["accessToken"], options={"verify_signature": False})
    assert claims["kind"] == "service" and claims["pat"] == made.json["data"]["apiToken"]["id"]
    listed = admin.call("GET", f"/api/tokens?userId={account['id']}").json["data"]["items"]
    assert made.json["data"]["apiToken"]["id"] in {item["id"] for item in listed}
    assert admin.call("DELETE", f"/api/tokens/{listed[0]['id']}?userId={account['id']}").status_code == 200
