"""Administration, the internal directory, start-up checks, and the authorization matrix."""
from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
import pytest

from shared.config import ConfigError
from tests.auth.conftest import PASSWORD, build_auth_app
from tests.auth.helpers import multipart, picture


def test_list_and_search_users(make_account):
    admin = make_account("admin")
    marker = uuid.uuid4().hex[:6]
    names = [f"s{marker}_{n}" for n in range(3)]
    for name in names:
        admin.client.post("/api/users/register", headers=admin.service_headers,
                          json={"username": name, "email": f"{name}@example.org", "password": PASSWORD})
    found = admin.call("GET", f"/api/admin/users?search={marker.upper()}&pageSize=2")
    assert found.status_code == 200
    data = found.json["data"]
    assert (data["total"], data["page"], data["pageSize"]) == (3, 1, 2)
    assert [user["username"] for user in data["items"]] == names[:2]
    assert set(data["items"][0]) == {"id", "username", "displayName", "email", "role", "kind", "hasPassword",
                                     "createdAt", "isActive", "lastLoginAt", "credits"}
    assert data["items"][0]["credits"] == {"available": 500, "held": 0}
    second = admin.call("GET", f"/api/admin/users?search={marker}&pageSize=2&page=2").json["data"]
    assert [user["username"] for user in second["items"]] == names[2:]
    by_mail = admin.call("GET", f"/api/admin/users?search={names[1]}@example.org").json["data"]
    assert [user["username"] for user in by_mail["items"]] == [names[1]]
    for search in ("%", "_%_", "' OR '1'='1"):
        assert admin.call("GET", "/api/admin/users", query_string={"search": search}).json["data"]["total"] == 0
    for query in ("pageSize=101", "page=0", "page=abc", "pageSize=1.5", "sort=id", "search=" + "x" * 101):
        assert admin.call("GET", f"/api/admin/users?{query}").status_code == 422, query


def test_users_list_shows_balances_from_one_credits_call_and_finds_display_names(make_account, auth_app):
    """Each listed user carries their balance, read from credits once per page (not once per row);
    the search also finds display names; ``ids`` looks users up by id."""
    admin = make_account("admin")
    marker = uuid.uuid4().hex[:6]
    users = [make_account() for _ in range(3)]
    users[0].call("PUT", "/api/users/profile", json={"displayName": f"小明{marker}"})
    admin.call("POST", "/api/admin/users/%d/disable" % users[2].id)
    credits = auth_app.extensions["auth_admin"].credits
    calls = []
    original = credits.balances
    credits.balances = lambda ids: calls.append(list(ids)) or original(ids)
    try:
        listed = admin.call("GET", "/api/admin/users", query_string={"ids": ",".join(str(u.id) for u in users)})
    finally:
        credits.balances = original
    assert listed.status_code == 200
    items = listed.json["data"]["items"]
    assert [item["id"] for item in items] == [u.id for u in users] and listed.json["data"]["total"] == 3
    assert [item["credits"] for item in items] == [{"available": 500, "held": 0}] * 3
    assert calls == [[u.id for u in users]]
    found = admin.call("GET", "/api/admin/users", query_string={"search": f"小明{marker}"}).json["data"]
    assert [(item["id"], item["displayName"]) for item in found["items"]] == [(users[0].id, f"小明{marker}")]
    for query in ("ids=x", "ids=0", "ids=" + ",".join(str(n) for n in range(1, 102))):
        assert admin.call("GET", f"/api/admin/users?{query}").status_code == 422, query


def test_users_list_without_credits_shows_no_balances(make_account, settings_env):
    env = {**settings_env, "CREDITS_URL": "http://127.0.0.1:9"}
    app = build_auth_app(env)
    try:
        admin_name = f"adm{uuid.uuid4().hex[:8]}"
        app.extensions["auth"].create_user(admin_name, f"{admin_name}@example.com", PASSWORD, role="admin")
        client = app.test_client()
        headers = {"X-Service-Token": env["SERVICE_TOKEN"]}
        token = client.post("/api/users/login", headers=headers,
                            json={"username": admin_name, "password": PASSWORD}).json["data"]["accessToken"]
        listed = client.get("/api/admin/users", query_string={"search": admin_name},
                            headers={**headers, "Authorization": f"Bearer {token}"})
        assert listed.status_code == 200
        assert [(item["username"], item["credits"]) for item in listed.json["data"]["items"]] == [(admin_name, None)]
    finally:
        app.extensions["db"].dispose()


def test_disable_stops_tokens_at_once_and_enable_restores(make_account, client, service_headers):
    admin, user = make_account("admin"), make_account()
    disabled = admin.call("POST", f"/api/admin/users/{user.id}/disable")
    assert disabled.status_code == 200
    assert disabled.json["data"]["user"]["isActive"] is False
    assert user.call("GET", "/api/users/profile").json["error"]["code"] == "TOKEN_REVOKED"
    login = client.post("/api/users/login", headers=service_headers,
                        json={"username": user.username, "password": user.password})
    assert (login.status_code, login.json["error"]["code"]) == (403, "ACCOUNT_DISABLED")

    assert admin.call("POST", f"/api/admin/users/{user.id}/enable").json["data"]["user"]["isActive"] is True
    user.use(user.login())
    assert user.call("GET", "/api/users/profile").status_code == 200

    self_disable = admin.call("POST", f"/api/admin/users/{admin.id}/disable")
    assert (self_disable.status_code, self_disable.json["error"]["code"]) == (409, "CANNOT_DISABLE_SELF")
    # An id no 64-bit column can hold matches no route at all.
    for unknown, code in ((999999999, "USER_NOT_FOUND"), (10**30, "NOT_FOUND")):
        missing = admin.call("POST", f"/api/admin/users/{unknown}/disable")
        assert (missing.status_code, missing.json["error"]["code"]) == (404, code)


def test_role_change_takes_effect_at_the_next_token(make_account):
    admin, user = make_account("admin"), make_account()
    promoted = admin.call("PUT", f"/api/admin/users/{user.id}/role", json={"role": "admin"})
    assert promoted.json["data"]["user"]["role"] == "admin"
    assert user.call("GET", "/api/admin/users").json["error"]["code"] == "TOKEN_REVOKED"
    user.use(user.client.post("/api/users/token/refresh", headers=user.service_headers,
                              json={"refreshToken": user.refresh_token}).json["data"])
    assert user.call("GET", "/api/admin/users").status_code == 200
    # Demoted again: the admin token dies at once.
    admin.call("PUT", f"/api/admin/users/{user.id}/role", json={"role": "user"})
    assert user.call("GET", "/api/admin/users").status_code == 401
    own = admin.call("PUT", f"/api/admin/users/{admin.id}/role", json={"role": "user"})
    assert (own.status_code, own.json["error"]["code"]) == (409, "CANNOT_CHANGE_OWN_ROLE")
    for body in ({"role": "root"}, {"role": None}, {}, {"role": "admin", "x": 1}):
        assert admin.call("PUT", f"/api/admin/users/{user.id}/role", json=body).status_code == 422


def test_internal_directory(make_account, client, service_headers):
    accounts = [make_account() for _ in range(3)]
    ids = [account.id for account in accounts]
    page = client.get(f"/internal/users/ids?after={ids[0] - 1}&limit=2", headers=service_headers).json["data"]
    assert page == {"ids": ids[:2], "next": ids[1]}
    rest = client.get(f"/internal/users/ids?after={ids[1]}&limit=1000", headers=service_headers).json["data"]
    assert rest["ids"][0] == ids[2] and rest["next"] is None
    for query in ("limit=1001", "limit=0", "after=-1", "after=x"):
        assert client.get(f"/internal/users/ids?{query}", headers=service_headers).status_code == 422
    entry = client.get(f"/internal/users/{ids[0]}", headers=service_headers).json["data"]
    assert entry == {"id": ids[0], "username": accounts[0].username, "displayName": None, "avatarUrl": None,
                     "role": "user", "kind": "person", "isActive": True, "newWorksPublic": True}
    accounts[1].call("PUT", "/api/users/profile", json={"privacy": {"newWorksPublic": False}})
    private = client.get(f"/internal/users/{ids[1]}", headers=service_headers).json["data"]
    assert private["newWorksPublic"] is False
    for unknown in (999999999, 2**63, 10**30):
        assert client.get(f"/internal/users/{unknown}", headers=service_headers).status_code == 404
    assert client.get(f"/internal/users/ids?after={10**30}", headers=service_headers).status_code == 422
    accounts[2].call("PUT", "/api/users/profile", json={"displayName": "小红"})
    batch = client.get(f"/internal/users?ids={ids[2]},{ids[0]},999999999,{ids[2]}", headers=service_headers)
    assert [(e["id"], e["username"], e["displayName"]) for e in batch.json["data"]["items"]] == [
        (ids[0], accounts[0].username, None), (ids[2], accounts[2].username, "小红")]
    for query in ("", "ids=", "ids=a", "ids=" + ",".join(str(n) for n in range(1, 102))):
        assert client.get(f"/internal/users?{query}", headers=service_headers).status_code == 422, query
    assert client.get(f"/internal/users/{ids[0]}").status_code == 403
    # A user's own token is not a service token.
    assert client.get(f"/internal/users/{ids[0]}", headers={
        "Authorization": f"Bearer {accounts[0].access_token}"}).status_code == 403


def test_production_refuses_to_start_without_the_private_key(auth_env, tmp_path):
    env = {**auth_env, "APP_ENV": "production", "SMTP_HOST": "mail.example.com",
           "JWT_PRIVATE_KEY_PATH": str(tmp_path / "missing.pem")}
    with pytest.raises(ConfigError, match="private key"):
        build_auth_app(env)


def _expired_token(auth_settings, account) -> str:
    now = int(time.time())
    claims = {"sub": str(account.id), "username": account.username, "role": "user", "type": "access",
              "jti": uuid.uuid4().hex, "iat": now - 3600, "exp": now - 60}
    return jwt.encode(claims, auth_settings.jwt_private_key_path.read_text(), algorithm="RS256")


def _tampered_token(account) -> str:
    head, body, signature = account.access_token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["role"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{signature}"


def _unsigned_token(account) -> str:
    head = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    return f"{head}.{account.access_token.split('.')[1]}."


CALLERS = ("anonymous", "owner", "other", "disabled", "expired", "tampered", "unsigned", "admin")
DENIED = {"anonymous": 401, "disabled": 401, "expired": 401, "tampered": 401, "unsigned": 401}
SELF = {**DENIED, "owner": 200, "other": 200, "admin": 200}
ADMIN_ONLY = {**DENIED, "owner": 403, "other": 403, "admin": 200}
PUBLIC_READ = {**SELF, "anonymous": 200}

MATRIX = [
    ("GET", "/api/users/profile", None, SELF),
    ("PUT", "/api/users/profile", {"json": {"bio": "hello"}}, SELF),
    ("PUT", "/api/users/password", {"json": {"currentPassword": PASSWORD, "newPassword": "another99"}}, SELF),
    ("POST", "/api/users/avatar", {"data": multipart("avatar", picture("PNG", size=(64, 64))),
                                   "content_type": "multipart/form-data; boundary=b0undary"}, SELF),
    ("GET", "/api/users/me/export", None, SELF),
    ("POST", "/api/users/logout", None, SELF),
    ("DELETE", "/api/users/me", {"json": {"password": PASSWORD}}, SELF),
    ("GET", "/api/users/{owner_name}/public", None, PUBLIC_READ),
    ("GET", "/api/admin/users", None, ADMIN_ONLY),
    ("POST", "/api/admin/users/{owner_id}/disable", None, ADMIN_ONLY),
    ("POST", "/api/admin/users/{owner_id}/enable", None, ADMIN_ONLY),
    ("PUT", "/api/admin/users/{owner_id}/role", {"json": {"role": "user"}}, ADMIN_ONLY),
]


@pytest.mark.parametrize("method, path, kwargs, expected", MATRIX, ids=[f"{m} {p}" for m, p, *_ in MATRIX])
def test_authorization_matrix(make_account, client, service_headers, auth_settings, method, path, kwargs, expected):
    owner, other, disabled, admin = make_account(), make_account(), make_account(), make_account("admin")
    assert admin.call("POST", f"/api/admin/users/{disabled.id}/disable").status_code == 200
    tokens = {"owner": owner.access_token, "other": other.access_token, "disabled": disabled.access_token,
              "admin": admin.access_token, "expired": _expired_token(auth_settings, owner),
              "tampered": _tampered_token(owner), "unsigned": _unsigned_token(owner), "anonymous": None}
    url = path.format(owner_name=owner.username, owner_id=owner.id)
    statuses = {}
    for caller in CALLERS:
        headers = dict(service_headers)
        if tokens[caller]:
            headers["Authorization"] = f"Bearer {tokens[caller]}"
        response = client.open(url, method=method, headers=headers, **(kwargs or {}))
        assert response.json["success"] is (response.status_code < 400)
        statuses[caller] = response.status_code
    assert statuses == expected
