"""Access-token verification with the public key (RS256).

Only the auth service holds the private key and signs; every other process
verifies with the public key alone. Development keys are generated once into
the data folder; production must configure both key paths.

Revocation: auth marks a signed-out token id (``revoked:jti:<jti>``) and a disabled,
deleted or password-changed user (``revoked:user:<id>``, holding the revocation time in
Unix seconds: tokens issued before it are refused) in Redis, each for one access-token
lifetime. An app that keeps a Redis client in ``app.extensions["redis"]`` checks both
keys on every authenticated request with one MGET; an app without one skips the check.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import jwt
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import current_app, g, request

from shared.config import Settings
from shared.errors import Forbidden, ServiceUnavailable, Unauthorized

ALGORITHM = "RS256"


@dataclass(frozen=True)
class Claims:
    user_id: int
    username: str
    role: str
    token_id: str
    issued_at: float = 0.0  # "iat", Unix seconds (auth signs it with sub-second precision)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


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


def decode_access_token(token: str, public_key: str) -> Claims:
    """Verify signature, expiry and type; raise Unauthorized with a precise code otherwise."""
    try:
        payload = jwt.decode(token, public_key, algorithms=[ALGORITHM],
                             options={"require": ["exp", "iat", "sub", "jti"]})
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("Your session has expired; sign in again.", code="TOKEN_EXPIRED") from exc
    except jwt.PyJWTError as exc:
        raise Unauthorized("The access token is invalid.", code="TOKEN_INVALID") from exc
    if payload.get("type") != "access":
        raise Unauthorized("The access token is invalid.", code="TOKEN_INVALID")
    try:
        return Claims(user_id=int(payload["sub"]), username=str(payload["username"]),
                      role=str(payload["role"]), token_id=str(payload["jti"]),
                      issued_at=float(payload["iat"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise Unauthorized("The access token is invalid.", code="TOKEN_INVALID") from exc


def revoked_token_key(token_id: str) -> str:
    return f"revoked:jti:{token_id}"


def revoked_user_key(user_id: int) -> str:
    return f"revoked:user:{user_id}"


def check_not_revoked(client: redis.Redis, claims: Claims) -> None:
    """Refuse a signed-out token, or one issued before its user was revoked (one MGET).

    Fails closed: when Redis cannot answer, the request is refused with 503 rather than
    letting a possibly revoked token through.
    """
    try:
        token_mark, user_mark = client.mget([revoked_token_key(claims.token_id),
                                             revoked_user_key(claims.user_id)])
    except redis.RedisError as exc:
        raise ServiceUnavailable("Sign-in cannot be checked right now; try again shortly.",
                                 code="REVOCATION_CHECK_UNAVAILABLE") from exc
    if token_mark is not None:
        raise Unauthorized("This session has ended; sign in again.", code="TOKEN_REVOKED")
    if user_mark is not None and claims.issued_at < _revocation_time(user_mark):
        raise Unauthorized("This session has ended; sign in again.", code="TOKEN_REVOKED")


def _revocation_time(mark: str | bytes) -> float:
    try:
        return float(mark)
    except ValueError:
        return float("inf")  # an unreadable mark revokes everything rather than nothing


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _public_key() -> str:
    key = current_app.config.get("JWT_PUBLIC_KEY")
    if key is None:
        settings: Settings = current_app.config["SETTINGS"]
        key = settings.jwt_public_key_path.read_text()
        current_app.config["JWT_PUBLIC_KEY"] = key
    return key


def optional_user() -> Claims | None:
    """The caller's claims if a valid token is presented, else None (a bad token is still a 401)."""
    if "claims" not in g:
        token = bearer_token()
        claims = decode_access_token(token, _public_key()) if token else None
        client = current_app.extensions.get("redis")
        if claims is not None and client is not None:
            check_not_revoked(client, claims)
        g.claims = claims
    return g.claims


def require_user() -> Claims:
    claims = optional_user()
    if claims is None:
        raise Unauthorized("Sign in to continue.", code="NO_TOKEN")
    return claims


def require_admin() -> Claims:
    claims = require_user()
    if not claims.is_admin:
        raise Forbidden("Administrators only.", code="ADMIN_REQUIRED")
    return claims
