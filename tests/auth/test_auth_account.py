"""Account deletion, data export and the public profile."""
from __future__ import annotations

import json
import threading
import time

import redis
from sqlalchemy import func, select

from shared.embedded import free_port
from shared.events import PLATFORM_STREAM
from shared.tokens import Claims
from services.auth.deletion import AccountDeletion
from services.auth.models import OutboxEntry, RefreshToken, User
from services.auth.outbox import Outbox
from services.auth.relay import run_relay
from tests.auth.conftest import build_auth_app
from tests.auth.helpers import picture, upload


def test_deletion_removes_the_row_revokes_and_announces(make_account, auth_app, redis_conn, client,
                                                        service_headers):
    account = make_account()
    other_session = account.login()
    last_id = (redis_conn.xrevrange(PLATFORM_STREAM, count=1) or [("0-0", {})])[0][0]

    wrong = account.call("DELETE", "/api/users/me", json={"password": "nottheone1"})
    assert (wrong.status_code, wrong.json["error"]["code"]) == (422, "INVALID_PASSWORD")
    assert list(wrong.json["error"]["details"]) == ["password"]
    assert account.call("DELETE", "/api/users/me", json={}).status_code == 422

    deleted = account.call("DELETE", "/api/users/me", json={"password": account.password})
    assert deleted.status_code == 200
    assert deleted.json["data"] == {"deleted": True}

    with auth_app.extensions["db"].read() as session:
        assert session.get(User, account.id) is None
        assert session.scalar(select(func.count()).select_from(RefreshToken)
                              .where(RefreshToken.user_id == account.id)) == 0
    events = [fields for _, fields in redis_conn.xrange(PLATFORM_STREAM, min=f"({last_id}")
              if fields["userId"] == str(account.id)]
    assert len(events) == 1
    assert events[0]["type"] == "user.deleted" and events[0]["ts"].endswith("Z")
    # Tokens of the deleted user stop at once, and the name is free again.
    assert account.call("GET", "/api/users/profile").json["error"]["code"] == "TOKEN_REVOKED"
    headers = {**service_headers, "Authorization": f"Bearer {other_session['accessToken']}"}
    assert client.get("/api/users/profile", headers=headers).status_code == 401
    assert client.post("/api/users/login", headers=service_headers,
                       json={"username": account.username, "password": account.password}).status_code == 401
    assert client.post("/api/users/register", headers=service_headers, json={
        "username": account.username, "email": account.email, "password": account.password}).status_code == 201


def test_a_deletion_while_redis_cannot_take_the_announcement_keeps_it_in_the_outbox_until_relayed(
        make_account, auth_app, redis_conn):
    account = make_account()
    db = auth_app.extensions["db"]
    unreachable = redis.Redis(port=free_port(), socket_connect_timeout=0.5)
    original = auth_app.extensions["auth_deletion"]
    stranded = AccountDeletion(db, original.storage, original.revocations, Outbox(db, unreachable))
    claims = Claims(user_id=account.id, username=account.username, role="user", token_id="t")
    last_id = (redis_conn.xrevrange(PLATFORM_STREAM, count=1) or [("0-0", {})])[0][0]

    stranded.delete_account(claims, account.password)

    with db.read() as session:
        assert session.get(User, account.id) is None
        waiting = [entry for entry in session.scalars(select(OutboxEntry)).all()
                   if json.loads(entry.fields) == {"userId": str(account.id)}]
    assert [(entry.event_type, entry.attempts) for entry in waiting] == [("user.deleted", 1)]
    assert not _announced(redis_conn, last_id, account.id)

    stop = threading.Event()
    relay = threading.Thread(target=run_relay, args=(auth_app, 0.05, stop))
    relay.start()
    try:
        deadline = time.monotonic() + 10
        while not _announced(redis_conn, last_id, account.id) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        relay.join()
    assert len(_announced(redis_conn, last_id, account.id)) == 1
    with db.read() as session:
        assert session.get(OutboxEntry, waiting[0].id) is None


def _announced(redis_conn, after: str, user_id: int) -> list[dict]:
    return [fields for _, fields in redis_conn.xrange(PLATFORM_STREAM, min=f"({after}")
            if fields.get("type") == "user.deleted" and fields.get("userId") == str(user_id)]


def test_deletion_removes_the_avatar_file(make_account, auth_settings):
    account = make_account()
    url = upload(account, picture("PNG", color=(1, 2, 3))).json["data"]["avatarUrl"]
    path = auth_settings.media_dir / url.removeprefix("/media/")
    assert path.exists()
    assert account.call("DELETE", "/api/users/me", json={"password": account.password}).status_code == 200
    assert not path.exists()


def test_export_gathers_profile_credit_history_and_works(make_account, gallery):
    account = make_account()
    works = [{"id": n, "title": f"work {n}", "isPublic": n % 2 == 0} for n in range(1, 231)]
    gallery.works[account.id] = works
    response = account.call("GET", "/api/users/me/export")
    assert response.status_code == 200, response.json
    data = response.json["data"]
    assert set(data) == {"exportedAt", "profile", "credits", "works"}
    assert data["profile"]["username"] == account.username and data["profile"]["email"] == account.email
    assert [(t["type"], t["amount"]) for t in data["credits"]["transactions"]] == [("signup_bonus", 500)]
    assert data["works"] == works  # all three pages of the gallery's listing
    assert make_account().call("GET", "/api/users/me/export").json["data"]["works"] == []


def test_export_is_refused_whole_when_a_service_is_down(make_account, auth_env, service_headers):
    account = make_account()
    env = {**auth_env, "GALLERY_URL": f"http://127.0.0.1:{free_port()}"}
    app = build_auth_app(env)
    try:
        response = app.test_client().get("/api/users/me/export", headers=account.headers)
    finally:
        app.extensions["db"].dispose()
    assert (response.status_code, response.json["error"]["code"]) == (503, "GALLERY_UNAVAILABLE")


def test_public_profile_and_its_visibility(make_account, gallery, client, service_headers):
    owner, stranger, admin = make_account(), make_account(), make_account("admin")
    owner.call("PUT", "/api/users/profile", json={"bio": "Painter \U0001f3a8"})
    gallery.stats[owner.id] = {"works": 7, "likesReceived": 42}
    path = f"/api/users/{owner.username.upper()}/public"

    anonymous = client.get(path, headers=service_headers)
    assert anonymous.status_code == 200
    data = anonymous.json["data"]
    assert set(data) == {"id", "username", "displayName", "avatarUrl", "bio", "joinedAt", "counts"}
    assert (data["id"], data["username"], data["bio"], data["avatarUrl"]) == (
        owner.id, owner.username, "Painter \U0001f3a8", None)
    assert data["counts"] == {"works": 7, "likesReceived": 42}
    assert data["joinedAt"].endswith("Z")

    owner.call("PUT", "/api/users/profile", json={"privacy": {"profileVisible": False}})
    hidden = client.get(path, headers=service_headers)
    assert (hidden.status_code, hidden.json["error"]["code"]) == (404, "USER_NOT_FOUND")
    assert stranger.call("GET", path).status_code == 404
    assert owner.call("GET", path).status_code == 200
    assert admin.call("GET", path).status_code == 200


def test_public_profile_counts_fall_back_to_zero(make_account, client, service_headers, caplog):
    account = make_account()  # the gallery stand-in answers 404 for users it does not know
    response = client.get(f"/api/users/{account.username}/public", headers=service_headers)
    assert response.json["data"]["counts"] == {"works": 0, "likesReceived": 0}
    assert "gallery stats" in caplog.text
    for name in ("nobody_at_all", "x' OR '1'='1", "%00", "\uff41\uff42\uff43"):
        assert client.get(f"/api/users/{name}/public", headers=service_headers).status_code == 404
