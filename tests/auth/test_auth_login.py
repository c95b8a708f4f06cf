"""Login, the profile, and the admin command."""
from __future__ import annotations

import jwt

from shared.tokens import decode_access_token, revoked_token_key
from services.auth.models import User
from tests.auth.conftest import build_auth_app


def login(client, service_headers, username, password):
    return client.post("/api/users/login", json={"username": username, "password": password},
                       headers=service_headers)


def test_login_by_username_or_email(register, client, service_headers, auth_app, unique):
    registered = register(username=f"Bo_{unique}", email=f"bo{unique}@example.com").json["data"]["user"]
    by_name = login(client, service_headers, f"bo_{unique}", "secret123")
    by_mail = login(client, service_headers, f"BO{unique}@example.com", "secret123")
    for response in (by_name, by_mail):
        assert response.status_code == 200
        data = response.json["data"]
        assert data["user"] == registered
        assert data["tokenType"] == "Bearer"
        with auth_app.app_context():
            claims = decode_access_token(data["accessToken"])
        assert claims.user_id == registered["id"]

    token = by_name.json["data"]["accessToken"]
    profile = client.get("/api/users/profile", headers={**service_headers, "Authorization": f"Bearer {token}"})
    assert profile.status_code == 200
    assert profile.json["data"]["user"]["lastLoginAt"].endswith("Z")
    assert profile.json["data"]["user"]["bio"] == ""


def test_wrong_password_and_unknown_user_look_the_same(register, client, service_headers, unique):
    register(username=f"Cy_{unique}")
    wrong = login(client, service_headers, f"Cy_{unique}", "secret124")
    unknown = login(client, service_headers, f"nobody_{unique}", "secret123")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json == unknown.json
    assert wrong.json["error"]["code"] == "INVALID_CREDENTIALS"


def test_passwords_differing_after_byte_72_are_different(register, client, service_headers, unique):
    prefix = "a1" * 36  # 72 bytes
    assert register(username=f"Lp_{unique}", password=prefix + "tail-one").status_code == 201
    assert login(client, service_headers, f"Lp_{unique}", prefix + "tail-two").status_code == 401
    assert login(client, service_headers, f"Lp_{unique}", prefix + "tail-one").status_code == 200


def test_disabled_account_is_403(register, client, service_headers, auth_app, unique):
    user_id = register(username=f"Dz_{unique}").json["data"]["user"]["id"]
    with auth_app.extensions["db"].transaction() as session:
        session.get(User, user_id).is_active = False
    response = login(client, service_headers, f"Dz_{unique}", "secret123")
    assert response.status_code == 403
    assert response.json["error"]["code"] == "ACCOUNT_DISABLED"


def test_profile_update_and_token_checks(register, client, service_headers, unique):
    token = register(username=f"Pf_{unique}").json["data"]["accessToken"]
    headers = {**service_headers, "Authorization": f"Bearer {token}"}
    updated = client.put("/api/users/profile", json={"bio": "I draw cats."}, headers=headers)
    assert updated.status_code == 200
    assert updated.json["data"]["user"]["bio"] == "I draw cats."
    assert client.put("/api/users/profile", json={"bio": "x", "role": "admin"}, headers=headers).status_code == 422
    assert client.get("/api/users/profile", headers=service_headers).status_code == 401
    assert login(client, service_headers, f"Pf_{unique}", 12345678).status_code == 422


def test_create_admin_command(auth_app, client, service_headers, unique):
    runner = auth_app.test_cli_runner()
    result = runner.invoke(args=["auth", "create-admin", f"Ad_{unique}", f"ad{unique}@example.com",
                                 "--password", "adminpass1"])
    assert result.exit_code == 0, result.output
    response = login(client, service_headers, f"ad_{unique}", "adminpass1")
    assert response.json["data"]["user"]["role"] == "admin"
    again = runner.invoke(args=["auth", "create-admin", f"Ad_{unique}", f"x{unique}@example.com",
                                "--password", "adminpass1"])
    assert again.exit_code != 0
    assert "taken" in again.output


def test_remember_me_lengthens_the_refresh_token(register, client, service_headers, auth_settings, unique):
    register(username=f"Rm_{unique}")
    short = login(client, service_headers, f"Rm_{unique}", "secret123").json["data"]
    long = client.post("/api/users/login", headers=service_headers, json={
        "username": f"rm_{unique}", "password": "secret123", "rememberMe": True}).json["data"]
    assert (short["refreshExpiresIn"], long["refreshExpiresIn"]) == (24 * 3600, 30 * 24 * 3600)
    assert short["expiresIn"] == long["expiresIn"] == auth_settings.access_token_minutes * 60
    # The lifetime class survives rotation.
    rotated = client.post("/api/users/token/refresh", headers=service_headers,
                          json={"refreshToken": long["refreshToken"]}).json["data"]
    assert rotated["refreshExpiresIn"] == 30 * 24 * 3600
    not_bool = client.post("/api/users/login", headers=service_headers, json={
        "username": f"rm_{unique}", "password": "secret123", "rememberMe": "yes"})
    assert not_bool.status_code == 422


def test_the_platform_setting_is_the_one_access_token_lifetime(auth_env, redis_conn, service_headers, unique):
    """ACCESS_TOKEN_MINUTES (shared Settings) sets the token's expiry, the advertised
    expiresIn and how long a sign-out's revocation mark lives."""
    env = {**auth_env, "ACCESS_TOKEN_MINUTES": "7"}
    app = build_auth_app(env)
    try:
        client = app.test_client()
        data = client.post("/api/users/register", headers=service_headers, json={
            "username": f"Lt_{unique}", "email": f"lt{unique}@example.com", "password": "secret123"}).json["data"]
        assert data["expiresIn"] == 7 * 60
        claims = jwt.decode(data["accessToken"], options={"verify_signature": False})
        assert claims["exp"] - int(claims["iat"]) == 7 * 60
        headers = {**service_headers, "Authorization": f"Bearer {data['accessToken']}"}
        assert client.post("/api/users/logout", headers=headers, json={}).status_code == 200
        assert 6 * 60 < redis_conn.ttl(revoked_token_key(claims["jti"])) <= 7 * 60
    finally:
        app.extensions["db"].dispose()
        app.extensions["redis"].close()
