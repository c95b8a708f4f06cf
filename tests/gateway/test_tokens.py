"""Forged, expired and revoked tokens on the gateway's own routes (the socket's are in test_ws)."""
from __future__ import annotations

import jwt
import pytest

from shared.tokens import revoked_token_key, revoked_user_key
from tests.gateway.conftest import ATTACKS


ROUTES = [("GET", "/api/jobs"), ("POST", "/api/generate"), ("DELETE", "/api/jobs/j1"), ("GET", "/api/jobs/j1")]


def test_attack_tokens_are_refused_on_gateway_routes(client, attack_tokens):
    assert sorted(attack_tokens) == sorted(ATTACKS)
    for attack in ATTACKS:
        token, code = attack_tokens[attack]
        for method, path in ROUTES:
            response = client.open(path, method=method, json={} if method == "POST" else None,
                                   headers={"Authorization": f"Bearer {token}"})
            outcome = (response.status_code, response.get_json()["success"], response.get_json()["error"]["code"])
            assert outcome == (401, False, code), f"{attack}: {method} {path}"


@pytest.mark.parametrize("mark", ["token", "user"])
def test_revoked_tokens_are_refused_on_gateway_routes(app, client, issue_token, unique, mark):
    user_id = 3_000_000 + int(unique[:5], 16)
    token = issue_token(user_id, f"r_{unique}")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/jobs", headers=headers).status_code == 200
    redis = app.extensions["redis"]
    claims = jwt.decode(token, options={"verify_signature": False})
    key = revoked_token_key(claims["jti"]) if mark == "token" else revoked_user_key(user_id)
    redis.set(key, str(claims["iat"] + 1), ex=60)
    try:
        response = client.get("/api/jobs", headers=headers)
    finally:
        redis.delete(key)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "TOKEN_REVOKED"
