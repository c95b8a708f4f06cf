"""Access tokens (RS256) with flask-jwt-extended, bound to every service app by
``shared.web.init_service_app``.

Only the auth service holds the private key and signs; every other process verifies
with the public key alone. Development keys are generated once into the data folder;
production must configure both key paths.

A token carries ``sub`` (the user id as a string), ``username``, ``role``, ``jti``,
``type`` ("access"), ``iat`` (Unix seconds with milliseconds) and ``exp``. Every refusal
answers with the platform's envelope: 401 ``NO_TOKEN``, ``TOKEN_INVALID``,
``TOKEN_EXPIRED`` or ``TOKEN_REVOKED``.

Revocation: auth marks a signed-out token id (``revoked:jti:<jti>``) and a disabled,
deleted or password-changed user (``revoked:user:<id>``, holding the revocation time in
Unix seconds: tokens issued before it are refused) in Redis, each for one access-token
lifetime. flask-jwt-extended's blocklist check reads both keys with one MGET on every
authenticated request of an app that keeps a Redis client in ``app.extensions["redis"]``;
an app without one skips the check.

API tokens (``pat_…``, auth's ``/api/tokens``) never reach a service: the gateway exchanges
one for a short-lived access token that auth signs with two more claims, ``scopes`` (what
the token may do) and ``pat`` (the API token's id; revoking it marks ``revoked:pat:<id>``,
checked in the same MGET). A route states the scope it serves (``require_user(scope=...)``);
a route that states none, such as everything about the account itself, refuses them.

Verified tokens are remembered per app (``VerifiedTokens``): a request presenting the very
bytes of a token this app verified before skips the signature check (most of the cost of
authentication), not the expiry or the revocation check, which run on every request.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, current_app, g, request
from flask_jwt_extended import JWTManager, decode_token, get_current_user, verify_jwt_in_request
from flask_jwt_extended.exceptions import JWTExtendedException, NoAuthorizationError
from jwt import ExpiredSignatureError, InvalidTokenError

from shared.config import Settings
from shared.errors import Forbidden, ServiceUnavailable, Unauthorized, error_response

ALGORITHM = "RS256"
# What an API token may be allowed to do; a route serving one states it.
SCOPES = ("generate", "works:read", "works:write", "credits:read", "webhooks")


@dataclass(frozen=True)
class Claims:
    user_id: int
    username: str
    role: str
    token_id: str
    issued_at: float = 0.0  # "iat", Unix seconds (auth signs it with sub-second precision)
    expires_at: float = 0.0  # "exp", Unix seconds
    scopes: tuple[str, ...] | None = None  # only on a token exchanged for an API token
    api_token_id: str | None = None  # "pat": the API token it was exchanged for
    kind: str = "person"  # "service" for a service account

    @property
    def is_admin(self) -> bool:
        return self.role == "admin" and self.api_token_id is None

    @property
    def is_service_account(self) -> bool:
        return self.kind == "service"

    def may(self, scope: str | None) -> bool:
        """Whether a route that states ``scope`` (None: none) lets this token through: any
        person's own token does; a token exchanged for an API token only with that scope."""
        return self.scopes is None or (scope is not None and scope in self.scopes)


def ensure_dev_keys(settings: Settings) -> None:
    """Create an RSA key pair in the data folder if none exists (development only)."""
    if settings.jwt_private_key_path.exists() and settings.jwt_public_key_path.exists():
        return
    if settings.is_production:
        raise RuntimeError("JWT keys are missing; production does not generate them")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    settings.jwt_private_key_path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(settings.jwt_private_key_path, private_pem)
    settings.jwt_public_key_path.write_bytes(public_pem)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


# The refusals, the same for a request (through the callbacks below) and for the socket.

def _no_token() -> Unauthorized:
    return Unauthorized("Sign in to continue.", code="NO_TOKEN")


def _invalid() -> Unauthorized:
    return Unauthorized("The access token is invalid.", code="TOKEN_INVALID")


def _expired() -> Unauthorized:
    return Unauthorized("Your session has expired; sign in again.", code="TOKEN_EXPIRED")


def _revoked() -> Unauthorized:
    return Unauthorized("This session has ended; sign in again.", code="TOKEN_REVOKED")


def _answer(error: Unauthorized):
    return error_response(error.status, error.code, error.message)


_BEARER = "Bearer "  # the scheme as flask-jwt-extended reads the header


class VerifiedTokens:
    """Claims of tokens whose signature this app has checked, by the token's exact text. At
    most ``size`` are kept (the oldest go first); an expired one is never answered."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._claims: dict[str, Claims] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> Claims | None:
        claims = self._claims.get(token)
        return claims if claims is not None and time.time() < claims.expires_at else None

    def of_header(self, authorization: str) -> Claims | None:
        """``get`` for the token of an ``Authorization: Bearer`` header (as ``_verified_caller``
        reads it); None for any other header."""
        return self.get(authorization[len(_BEARER):]) if authorization.startswith(_BEARER) else None

    def remember(self, token: str, claims: Claims) -> None:
        with self._lock:
            if len(self._claims) >= self.size:
                self._claims.pop(next(iter(self._claims)))
            self._claims[token] = claims


def init_jwt(app: Flask, settings: Settings) -> JWTManager:
    """Verify access tokens in ``app`` with flask-jwt-extended (from the ``Authorization:
    Bearer`` header only). The public key is read on first use; auth adds
    ``JWT_PRIVATE_KEY`` to sign."""
    app.config.update(JWT_ALGORITHM=ALGORITHM, JWT_TOKEN_LOCATION=["headers"], JWT_IDENTITY_CLAIM="sub",
                      JWT_ACCESS_TOKEN_EXPIRES=timedelta(minutes=settings.access_token_minutes),
                      # No cookies, so no CSRF claim; no "nbf": the claim set stays the platform's.
                      JWT_COOKIE_CSRF_PROTECT=False, JWT_ENCODE_NBF=False)
    manager = JWTManager(app)
    manager.decode_key_loader(lambda _header, _payload: _public_key())
    manager.token_in_blocklist_loader(_in_blocklist)
    manager.user_lookup_loader(lambda _header, payload: _claims(payload))  # None: malformed claims
    manager.unauthorized_loader(lambda _reason: _answer(_no_token()))
    manager.invalid_token_loader(lambda _reason: _answer(_invalid()))  # also a refresh-type token
    manager.user_lookup_error_loader(lambda _header, _payload: _answer(_invalid()))
    manager.expired_token_loader(lambda _header, _payload: _answer(_expired()))
    manager.revoked_token_loader(lambda _header, _payload: _answer(_revoked()))
    app.extensions["verified_tokens"] = VerifiedTokens()
    return manager


def _public_key() -> Any:
    """The public key, read and parsed once (PyJWT would parse a PEM text on every token)."""
    key = current_app.config.get("JWT_PUBLIC_KEY")
    if key is None:
        settings: Settings = current_app.config["SETTINGS"]
        key = current_app.config["JWT_PUBLIC_KEY"] = serialization.load_pem_public_key(
            settings.jwt_public_key_path.read_bytes())
    return key


def _claims(payload: dict[str, Any]) -> Claims | None:
    """The claims of a verified payload, or None when one is missing or malformed."""
    if payload.get("type") != "access" or "exp" not in payload or payload.get("jti") is None:
        return None
    scopes = payload.get("scopes")
    if scopes is not None and (not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes)):
        return None
    try:
        return Claims(user_id=int(payload["sub"]), username=str(payload["username"]),
                      role=str(payload["role"]), token_id=str(payload["jti"]),
                      issued_at=float(payload["iat"]), expires_at=float(payload["exp"]),
                      scopes=tuple(scopes) if scopes is not None else None,
                      api_token_id=str(payload["pat"]) if payload.get("pat") is not None else None,
                      kind=str(payload.get("kind", "person")))
    except (KeyError, ValueError, TypeError):
        return None


def _in_blocklist(_header: dict[str, Any], payload: dict[str, Any]) -> bool:
    client = current_app.extensions.get("redis")
    claims = _claims(payload)
    if client is None or claims is None:  # a malformed token is refused by the user lookup next
        return False
    return is_revoked(client, claims)


def decode_access_token(token: str) -> Claims:
    """Verify a token presented outside the ``Authorization`` header (the gateway's socket)
    with flask-jwt-extended's ``decode_token``, in the app context; refusals are the ones a
    request gets. The revocation check is left to the caller (``check_not_revoked``)."""
    try:
        payload = decode_token(token)
    except ExpiredSignatureError as exc:
        raise _expired() from exc
    except (InvalidTokenError, JWTExtendedException) as exc:
        raise _invalid() from exc
    claims = _claims(payload)
    if claims is None:
        raise _invalid()
    return claims


def revoked_token_key(token_id: str) -> str:
    return f"revoked:jti:{token_id}"


def revoked_user_key(user_id: int) -> str:
    return f"revoked:user:{user_id}"


def revoked_api_token_key(api_token_id: str) -> str:
    return f"revoked:pat:{api_token_id}"


def revocation_keys(claims: Claims) -> list[str]:
    """The keys whose values (one MGET) say whether the token is revoked (``revoked_by``)."""
    keys = [revoked_token_key(claims.token_id), revoked_user_key(claims.user_id)]
    if claims.api_token_id is not None:
        keys.append(revoked_api_token_key(claims.api_token_id))
    return keys


def revoked_by(claims: Claims, marks: list) -> bool:
    """Whether the values of ``revocation_keys(claims)`` revoke the token: signed out, issued
    before its user was revoked, or exchanged for an API token since revoked. A caller that
    has other Redis commands to send puts the MGET in their pipeline (one round trip)."""
    token_mark, user_mark, *api_token_mark = marks
    return (token_mark is not None or any(mark is not None for mark in api_token_mark)
            or (user_mark is not None and claims.issued_at < _revocation_time(user_mark)))


def is_revoked(client: redis.Redis, claims: Claims) -> bool:
    """``revoked_by`` the values Redis holds now (one MGET).

    Fails closed: when Redis cannot answer, ServiceUnavailable (503) is raised rather than
    letting a possibly revoked token through.
    """
    try:
        marks = client.mget(revocation_keys(claims))
    except redis.RedisError as exc:
        raise ServiceUnavailable("Sign-in cannot be checked right now; try again shortly.",
                                 code="REVOCATION_CHECK_UNAVAILABLE") from exc
    return revoked_by(claims, marks)


def check_not_revoked(client: redis.Redis, claims: Claims) -> None:
    """Raise Unauthorized (``TOKEN_REVOKED``) if ``is_revoked``."""
    if is_revoked(client, claims):
        raise _revoked()


def _revocation_time(mark: str | bytes) -> float:
    try:
        return float(mark)
    except ValueError:
        return float("inf")  # an unreadable mark revokes everything rather than nothing


def bearer_token() -> str | None:
    """The raw access token of the request, to forward it to another service."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def optional_user(scope: str | None = None) -> Claims | None:
    """The caller's claims if a valid token is presented, else None (a bad token is still a 401).

    A token exchanged for an API token must carry ``scope``; where the route states no scope
    it is refused (403 ``INSUFFICIENT_SCOPE``)."""
    if "claims" not in g:
        g.claims = _verified_caller()
    claims = g.claims
    if claims is not None and not claims.may(scope):
        raise Forbidden("This API token may not do this." if scope is None
                        else f"This API token lacks the scope {scope!r}.", code="INSUFFICIENT_SCOPE",
                        details={"required": scope, "granted": list(claims.scopes)})
    return claims


def _verified_caller() -> Claims | None:
    """The claims of the request's token: remembered ones after the expiry and revocation
    checks, others verified by flask-jwt-extended (and then remembered)."""
    header = request.headers.get("Authorization", "")
    token = header[len(_BEARER):] if header.startswith(_BEARER) else None
    remembered: VerifiedTokens | None = current_app.extensions.get("verified_tokens")
    if token and remembered is not None and (claims := remembered.get(token)) is not None:
        client = current_app.extensions.get("redis")
        if client is not None:
            check_not_revoked(client, claims)
        return claims
    claims = get_current_user() if verify_jwt_in_request(optional=True) else None
    if token and claims is not None and remembered is not None:
        remembered.remember(token, claims)
    return claims


def require_user(scope: str | None = None) -> Claims:
    """The signed-in caller. An API token's access token is accepted only with ``scope``."""
    claims = optional_user(scope)
    if claims is None:
        raise NoAuthorizationError("no access token")  # answered by the unauthorized callback: NO_TOKEN
    return claims


def require_admin() -> Claims:
    """An administrator's own session: never an API token."""
    claims = require_user()
    if not claims.is_admin:
        raise Forbidden("Administrators only.", code="ADMIN_REQUIRED")
    return claims
