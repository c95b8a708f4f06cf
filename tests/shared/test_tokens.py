"""shared.tokens: verification of access tokens and the Redis revocation check every service applies."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import jwt
import pytest
import redis
from flask import Flask
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.config import load_settings
from shared.embedded import free_port
from shared.errors import Unauthorized, ok
import shared.tokens
from shared.tokens import (Claims, VerifiedTokens, decode_access_token, ensure_dev_keys, optional_user,
                           require_admin, require_user, revoked_token_key, revoked_user_key)
from shared.web import init_service_app


@pytest.fixture
def token_settings(tmp_path, keys_dir, redis_url):
    settings = load_settings({"APP_ENV": "test", "DATA_DIR": str(tmp_path), "REDIS_URL": redis_url,
                              "SERVICE_TOKEN": "t", "JWT_PRIVATE_KEY_PATH": str(keys_dir / "jwt_private.pem"),
                              "JWT_PUBLIC_KEY_PATH": str(keys_dir / "jwt_public.pem")})
    ensure_dev_keys(settings)
    return settings


@pytest.fixture
def sign(token_settings):
    private_key = token_settings.jwt_private_key_path.read_text()

    def _sign(user_id: int, role: str = "user", iat: float | None = None, **overrides) -> tuple[str, str]:
        now = time.time() if iat is None else iat
        jti = uuid.uuid4().hex
        claims = {"sub": str(user_id), "username": f"user{user_id}", "role": role, "type": "access",
                  "jti": jti, "iat": now, "exp": int(now) + 900, **overrides}
        return jwt.encode(claims, private_key, algorithm="RS256"), jti

    return _sign


class CountingRedis(redis.Redis):
    """A real client that counts the commands it sends."""

    commands: list[str]

    def execute_command(self, *args, **options):
        self.commands.append(args[0])
        return super().execute_command(*args, **options)


def _app(settings, client: redis.Redis | None) -> Flask:
    app = Flask("probe")
    if client is not None:
        app.extensions["redis"] = client
    init_service_app(app, settings, internal=False)

    @app.get("/me")
    def me():
        claims = require_user()
        return ok({"id": claims.user_id, "iat": claims.issued_at})

    @app.get("/maybe")
    def maybe():
        claims = optional_user()
        return ok(claims.user_id if claims else None)

    @app.get("/admin")
    def admin():
        return ok(require_admin().user_id)

    return app


@pytest.fixture
def counting_redis(redis_url):
    client = CountingRedis.from_url(redis_url, decode_responses=True)
    client.commands = []
    yield client
    client.close()


def _get(app, path, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return app.test_client().get(path, headers=headers)


def _user_id() -> int:
    return uuid.uuid4().int % 1_000_000_000


def test_revoked_token_id_is_refused_with_one_round_trip(token_settings, sign, counting_redis):
    app = _app(token_settings, counting_redis)
    user_id = _user_id()
    token, jti = sign(user_id)
    assert _get(app, "/me", token).status_code == 200
    assert counting_redis.commands == ["MGET"]
    counting_redis.set(revoked_token_key(jti), "1", ex=60)
    counting_redis.commands.clear()
    response = _get(app, "/me", token)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "TOKEN_REVOKED"
    assert counting_redis.commands == ["MGET"]
    assert _get(app, "/maybe", token).status_code == 401
    other, _ = sign(user_id)
    assert _get(app, "/me", other).status_code == 200


def test_a_token_seen_before_skips_the_signature_check_but_not_the_revocation_check(
        token_settings, sign, counting_redis, monkeypatch):
    verified = []
    real = shared.tokens.verify_jwt_in_request
    monkeypatch.setattr(shared.tokens, "verify_jwt_in_request", lambda **kw: verified.append(1) or real(**kw))
    app = _app(token_settings, counting_redis)
    token, jti = sign(_user_id())
    assert [_get(app, "/me", token).status_code for _ in range(3)] == [200, 200, 200]
    assert len(verified) == 1 and counting_redis.commands == ["MGET"] * 3
    counting_redis.set(revoked_token_key(jti), "1", ex=60)
    assert _get(app, "/me", token).json["error"]["code"] == "TOKEN_REVOKED"
    # Only the exact text is remembered: another spelling of the header is verified afresh.
    assert app.test_client().get("/me", headers={"Authorization": f"bearer {token}"}).status_code == 401


def test_a_token_remembered_by_one_app_is_still_checked_by_an_app_with_another_key(
        token_settings, sign, tmp_path, counting_redis):
    token, _ = sign(_user_id())
    assert _get(_app(token_settings, counting_redis), "/me", token).status_code == 200
    other_keys = tmp_path / "other-keys"
    other = load_settings({"APP_ENV": "test", "DATA_DIR": str(tmp_path / "other"), "SERVICE_TOKEN": "t",
                           "JWT_PRIVATE_KEY_PATH": str(other_keys / "jwt_private.pem"),
                           "JWT_PUBLIC_KEY_PATH": str(other_keys / "jwt_public.pem")})
    ensure_dev_keys(other)
    assert _get(_app(other, counting_redis), "/me", token).json["error"]["code"] == "TOKEN_INVALID"


def test_remembered_tokens_expire_with_their_claims_and_the_oldest_make_room():
    remembered = VerifiedTokens(size=2)
    live = Claims(user_id=1, username="a", role="user", token_id="j1", expires_at=time.time() + 60)
    remembered.remember("expired", Claims(user_id=2, username="b", role="user", token_id="j2",
                                          expires_at=time.time() - 1))
    remembered.remember("live", live)
    assert remembered.get("expired") is None and remembered.get("live") == live
    remembered.remember("newer", live)
    remembered.remember("newest", live)
    assert remembered.get("live") is None, "the oldest made room"
    assert remembered.get("newer") == remembered.get("newest") == live


def test_user_revocation_refuses_tokens_issued_before_it(token_settings, sign, counting_redis):
    app = _app(token_settings, counting_redis)
    user_id = _user_id()
    now = time.time()
    before, _ = sign(user_id, iat=now - 0.002)
    after, _ = sign(user_id, iat=now + 0.002)
    counting_redis.set(revoked_user_key(user_id), repr(now), ex=60)
    assert _get(app, "/me", before).json["error"]["code"] == "TOKEN_REVOKED"
    assert _get(app, "/admin", sign(user_id, role="admin", iat=now - 1)[0]).status_code == 401
    assert _get(app, "/me", after).status_code == 200
    assert _get(app, "/me", after).json["data"]["iat"] == pytest.approx(now + 0.002)
    counting_redis.set(revoked_user_key(user_id), "garbage", ex=60)
    assert _get(app, "/me", after).status_code == 401  # an unreadable mark revokes, never admits


def test_apps_without_redis_skip_the_check(token_settings, sign, redis_url):
    user_id = _user_id()
    token, jti = sign(user_id)
    marks = redis.Redis.from_url(redis_url)
    marks.set(revoked_token_key(jti), "1", ex=60)
    marks.close()
    assert _get(_app(token_settings, None), "/me", token).status_code == 200


def test_unreachable_redis_fails_closed(token_settings, sign):
    down = redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    app = _app(token_settings, down)
    response = _get(app, "/me", sign(_user_id())[0])
    assert response.status_code == 503
    assert response.json["error"]["code"] == "REVOCATION_CHECK_UNAVAILABLE"
    assert _get(app, "/maybe").json["data"] is None  # anonymous calls need no check


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged(header: dict, payload: dict, key: bytes | None) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest() if key else b""
    return f"{signing_input}.{_b64(signature)}"


def _signed_without(settings, payload: dict, claim: str) -> str:
    """A token signed with the platform's key that lacks one claim."""
    return jwt.encode({name: value for name, value in payload.items() if name != claim},
                      settings.jwt_private_key_path.read_text(), algorithm="RS256")


def test_forged_and_broken_tokens_are_refused(token_settings, sign):
    public_key = token_settings.jwt_public_key_path.read_text()
    now = int(time.time())
    payload = {"sub": "7", "username": "eve", "role": "admin", "type": "access", "jti": "x" * 32,
               "iat": now, "exp": now + 900}
    good, _ = sign(7)
    head, body, signature = good.split(".")
    tampered_body = _b64(json.dumps({**payload, "sub": "8"}).encode())
    cases = {
        "alg none": _forged({"alg": "none", "typ": "JWT"}, payload, None),
        "HS256 with the public key": _forged({"alg": "HS256", "typ": "JWT"}, payload, public_key.encode()),
        "tampered payload": f"{head}.{tampered_body}.{signature}",
        "truncated signature": f"{head}.{body}.{signature[:-4]}",
        "garbage": "not-a-jwt",
        "refresh type": sign(7, type="refresh")[0],
        "non-numeric subject": sign(7, sub="seven")[0],
        "numeric subject": sign(7, sub=7)[0],
        "unknown type": sign(7, type="id")[0],
        "no subject": _signed_without(token_settings, payload, "sub"),
        "no token id": _signed_without(token_settings, payload, "jti"),
        "no issue time": _signed_without(token_settings, payload, "iat"),
        "no expiry": _signed_without(token_settings, payload, "exp"),
        "no username": _signed_without(token_settings, payload, "username"),
    }
    expired, _ = sign(7, iat=now - 3600, exp=now - 60)
    app = _app(token_settings, None)
    refusals = {**{name: (token, "TOKEN_INVALID") for name, token in cases.items()}, "expired": (expired, "TOKEN_EXPIRED")}
    for name, (token, code) in refusals.items():
        with app.app_context(), pytest.raises(Unauthorized) as caught:
            decode_access_token(token)
        assert getattr(caught.value, "code", None) == code, name
        for path in ("/me", "/maybe", "/admin"):
            response = _get(app, path, token)
            assert (response.status_code, response.json["success"], response.json["error"]["code"]) == \
                (401, False, code), f"{name}: {path}"


def test_missing_token_is_refused_with_no_token_and_bad_headers_never_pass(token_settings, sign):
    app = _app(token_settings, None)
    missing = _get(app, "/me")
    assert (missing.status_code, missing.json["error"]["code"]) == (401, "NO_TOKEN")
    assert _get(app, "/admin").json["error"]["code"] == "NO_TOKEN"
    assert _get(app, "/maybe").json["data"] is None
    token, _ = sign(_user_id())
    for header in ("Basic " + token, token, "Token " + token):  # not a bearer token: anonymous
        response = app.test_client().get("/me", headers={"Authorization": header})
        assert (response.status_code, response.json["error"]["code"]) == (401, "NO_TOKEN"), header
    for header in ("Bearer", "Bearer " + token + " extra"):
        response = app.test_client().get("/maybe", headers={"Authorization": header})
        assert response.status_code == 401, header


def test_claims_keep_their_four_field_signature():
    claims = Claims(1, "ann", "admin", "jti")
    assert (claims.user_id, claims.is_admin, claims.issued_at) == (1, True, 0.0)
