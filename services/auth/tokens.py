"""Signing access tokens and minting opaque secrets (refresh and reset tokens).

Access tokens are signed by flask-jwt-extended's ``create_access_token`` with the private
key only this service's app holds (``JWT_PRIVATE_KEY``, RS256); every service verifies
them with the public key (``shared.tokens``).
"""
from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from flask_jwt_extended import create_access_token


@dataclass(frozen=True)
class AccessToken:
    token: str
    token_id: str
    issued_at: float
    expires_at: int = 0


class TokenSigner:
    """Signs in the current app context (a request of the auth app)."""

    def __init__(self, access_token_minutes: int) -> None:
        self.expires_in = access_token_minutes * 60  # seconds

    def access_token(self, user_id: int, username: str, role: str, *, expires_at: float | None = None,
                     extra: dict[str, Any] | None = None) -> AccessToken:
        """``extra``: the claims of a token exchanged for an API token (``scopes``, ``pat``,
        ``kind``); ``expires_at`` (Unix seconds) shortens its life to the API token's."""
        # flask-jwt-extended would write "iat" in whole seconds; it keeps milliseconds here so
        # a token issued right after a user's revocation (``revoked:user``, same clock) is not
        # mistaken for one issued before it. "exp" comes from the same reading, and "jti" is
        # 32 hex digits, the width ``refresh_tokens.access_token_id`` keeps.
        now = round(time.time(), 3)
        token_id = uuid.uuid4().hex
        expires = int(now) + self.expires_in
        if expires_at is not None:
            expires = min(expires, int(expires_at))
        token = create_access_token(str(user_id), additional_claims={
            **(extra or {}), "username": username, "role": role, "jti": token_id, "iat": now, "exp": expires})
        return AccessToken(token, token_id, now, expires)


def new_secret() -> tuple[str, str]:
    """A random URL-safe secret for the client and the digest the database keeps."""
    secret = secrets.token_urlsafe(32)
    return secret, secret_digest(secret)


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()
