"""Access-token verification with the public key (RS256).

Only the auth service holds the private key and signs; every other process
verifies with the public key alone. Development keys are generated once into
the data folder; production must configure both key paths.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import current_app, g, request

from shared.config import Settings
from shared.errors import Forbidden, Unauthorized

ALGORITHM = "RS256"


@dataclass(frozen=True)
class Claims:
    user_id: int
    username: str
    role: str
    token_id: str

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
                      role=str(payload["role"]), token_id=str(payload["jti"]))
    except (KeyError, ValueError) as exc:
        raise Unauthorized("The access token is invalid.", code="TOKEN_INVALID") from exc


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
        g.claims = decode_access_token(token, _public_key()) if token else None
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
