"""Registration: the user row, the token, the credit account, and every way input can be wrong."""
from __future__ import annotations

import re

import jwt
import pytest
import requests

from shared.embedded import free_port
from shared.tokens import decode_access_token
from tests.auth.conftest import build_auth_app


def test_register_returns_a_verifiable_token_and_500_credits(register, auth_settings, auth_app, credits_url,
                                                             service_headers, unique):
    """Registration signs in at once: an access token of the platform's lifetime
    (ACCESS_TOKEN_MINUTES) and, as the web client keeps a new account's session, a refresh
    token of the remember-me lifetime."""
    response = register(username=f"Ann_{unique}", email=f"Ann.{unique}@Example.COM")
    assert response.status_code == 201
    data = response.json["data"]
    assert data["user"]["username"] == f"Ann_{unique}"
    assert data["user"]["email"] == f"ann.{unique}@example.com"
    assert data["user"]["role"] == "user"
    assert data["user"]["createdAt"].endswith("Z")
    assert (data["tokenType"], data["expiresIn"], data["refreshExpiresIn"]) == (
        "Bearer", auth_settings.access_token_minutes * 60, 30 * 24 * 3600)
    assert data["user"]["displayName"] is None
    assert len(data["refreshToken"]) >= 40
    assert data["credits"] == {"available": 500, "held": 0}

    with auth_app.app_context():
        claims = decode_access_token(data["accessToken"])
    assert (claims.user_id, claims.username, claims.role) == (data["user"]["id"], f"Ann_{unique}", "user")
    assert len(claims.token_id) == 32

    ledger = requests.get(f"{credits_url}/api/users/credits/transactions", timeout=5,
                          headers={**service_headers, "Authorization": f"Bearer {data['accessToken']}"})
    items = ledger.json()["data"]["items"]
    assert [(item["type"], item["amount"]) for item in items] == [("signup_bonus", 500)]


def test_register_without_remember_me_gets_a_one_day_session(register, unique):
    data = register(rememberMe=False).json["data"]
    assert data["refreshExpiresIn"] == 24 * 3600
    assert register(username=f"v_{unique}", email=f"v{unique}@example.com", rememberMe="yes").status_code == 422


def test_register_with_a_chinese_display_name(register, client, service_headers, unique):
    """The display name is any script, trimmed; the login name stays ASCII."""
    data = register(displayName="  小明创作 🎨 ").json["data"]
    assert (data["user"]["username"], data["user"]["displayName"]) == (f"u_{unique}", "小明创作 🎨")
    profile = client.get("/api/users/profile", headers={**service_headers,
                                                        "Authorization": f"Bearer {data['accessToken']}"})
    assert profile.json["data"]["user"]["displayName"] == "小明创作 🎨"
    blank = register(username=f"b_{unique}", email=f"b{unique}@example.com", displayName="   ").json["data"]
    assert blank["user"]["displayName"] is None


def test_access_tokens_carry_the_platform_claims(register, auth_settings, unique):
    """Signed by flask-jwt-extended, the token still is what every verifier and the web client
    read: RS256, the user id as a string subject, and an issue time with milliseconds."""
    data = register().json["data"]
    token = data["accessToken"]
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "typ": "JWT"}
    claims = jwt.decode(token, auth_settings.jwt_public_key_path.read_text(), algorithms=["RS256"])
    assert set(claims) == {"sub", "username", "role", "jti", "type", "iat", "exp", "fresh"}
    assert (claims["sub"], claims["username"], claims["role"], claims["type"], claims["fresh"]) == (
        str(data["user"]["id"]), f"u_{unique}", "user", "access", False)
    assert re.fullmatch(r"[0-9a-f]{32}", claims["jti"])
    assert isinstance(claims["iat"], float) and round(claims["iat"], 3) == claims["iat"]
    assert claims["exp"] == int(claims["iat"]) + auth_settings.access_token_minutes * 60


def test_register_succeeds_without_credits(settings_env, settings, service_headers, unique):
    env = {**settings_env, "CREDITS_URL": f"http://127.0.0.1:{free_port()}"}
    app = build_auth_app(env)
    try:
        response = app.test_client().post("/api/users/register", headers=service_headers, json={
            "username": f"nc_{unique}", "email": f"nc{unique}@example.com", "password": "secret123"})
    finally:
        app.extensions["db"].dispose()
    assert response.status_code == 201
    assert response.json["data"]["credits"] is None


def test_duplicates_are_409_case_insensitively(register, unique):
    assert register(username=f"Dup_{unique}", email=f"dup{unique}@example.com").status_code == 201
    same_name = register(username=f"dUP_{unique}", email=f"other{unique}@example.com")
    assert same_name.status_code == 409
    assert same_name.json["error"]["code"] == "USERNAME_TAKEN"
    same_mail = register(username=f"Other_{unique}", email=f"DUP{unique}@Example.com")
    assert same_mail.status_code == 409
    assert same_mail.json["error"]["code"] == "EMAIL_TAKEN"


@pytest.mark.parametrize("fields, bad_field", [
    ({"password": "short1"}, "password"),
    ({"password": "onlyletters"}, "password"),
    ({"password": "1234567890"}, "password"),
    ({"password": "a1" * 65}, "password"),
    ({"email": "not-an-email"}, "email"),
    ({"username": "ab"}, "username"),
    ({"username": "has space"}, "username"),
    ({"username": "x" * 21}, "username"),
    ({"username": 12345}, "username"),
    ({"password": 12345678}, "password"),
    ({"role": "admin"}, "role"),
    ({"username": "abc\uff11\uff12"}, "username"),  # full-width digits are not ASCII digits
    ({"username": "caf\u00e9_x"}, "username"),
    ({"username": "ab\U0001f600"}, "username"),
    ({"username": "x' OR '1'='1"}, "username"),
    ({"username": "abc\x00def"}, "username"),
    ({"username": "abc\n"}, "username"),
    ({"password": "secret123\x00"}, "password"),
    ({"email": "a\x00b@example.com"}, "email"),
    ({"email": ("x" * 250) + "@example.com"}, "email"),
    ({"email": None}, "email"),
    ({"password": ["secret123"]}, "password"),
    ({"displayName": "名" * 31}, "displayName"),
    ({"displayName": "evil\u202egnp.exe"}, "displayName"),  # a bidirectional override
    ({"displayName": "two\nlines"}, "displayName"),
    ({"displayName": 5}, "displayName"),
])
def test_bad_registrations_are_422(register, fields, bad_field):
    response = register(**fields)
    assert response.status_code == 422
    body = response.json
    assert body["success"] is False
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert list(body["error"]["details"]) == [bad_field]


def test_missing_fields_and_non_json_bodies(client, service_headers):
    missing = client.post("/api/users/register", json={}, headers=service_headers)
    assert missing.status_code == 422
    assert set(missing.json["error"]["details"]) == {"username", "email", "password"}
    for body in ("username=x", "[1, 2", ""):
        response = client.post("/api/users/register", data=body, headers=service_headers,
                               content_type="text/plain")
        assert response.status_code == 400
        assert response.json["error"]["code"] == "INVALID_JSON"
    not_object = client.post("/api/users/register", json=["a"], headers=service_headers)
    assert not_object.status_code == 422


def test_service_token_is_required(client, unique):
    response = client.post("/api/users/register", json={
        "username": f"t_{unique}", "email": f"t{unique}@example.com", "password": "secret123"})
    assert response.status_code == 403
    assert response.json["error"]["code"] == "SERVICE_TOKEN_REQUIRED"
    assert client.get("/readyz").json["data"]["components"] == {"database": "ok", "redis": "ok"}


def test_long_and_unicode_passwords_are_kept_whole(register, client, service_headers, unique):
    """A 128-character password with non-ASCII letters and full-width digits is accepted as given."""
    password = ("\u00e9\u00e8" * 60) + "\uff11abcdefg"
    assert len(password) == 128
    assert register(username=f"Uni_{unique}", password=password).status_code == 201
    login = client.post("/api/users/login", headers=service_headers,
                        json={"username": f"Uni_{unique}", "password": password[:-1] + "h"})
    assert login.status_code == 401
    login = client.post("/api/users/login", headers=service_headers,
                        json={"username": f"Uni_{unique}", "password": password})
    assert login.status_code == 200


def test_sql_looking_input_is_just_text(register, client, service_headers, unique):
    assert register(username=f"Sq_{unique}").status_code == 201
    for login in ("' OR 1=1 --", f"Sq_{unique}' --", "x@example.com' OR '1'='1"):
        response = client.post("/api/users/login", headers=service_headers,
                               json={"username": login, "password": "secret123"})
        assert response.status_code == 401
        assert response.json["error"]["code"] == "INVALID_CREDENTIALS"
