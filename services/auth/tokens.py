"""Signing access tokens (RS256) and minting opaque secrets (refresh and reset tokens).

Only this service holds the private key; everyone verifies with
``shared.tokens.decode_access_token`` and the public key.
"""
from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass

import jwt

from shared.tokens import ALGORITHM


@dataclass(frozen=True)
class AccessToken:
    token: str
    token_id: str
    issued_at: float


class TokenSigner:
    def __init__(self, private_key_pem: str, access_token_minutes: int) -> None:
        self._private_key = private_key_pem
        self.expires_in = access_token_minutes * 60  # seconds

    def access_token(self, user_id: int, username: str, role: str) -> AccessToken:
        # "iat" keeps milliseconds so a token issued right after a user's revocation
        # (``revoked:user``, same clock) is not mistaken for one issued before it.
        now = round(time.time(), 3)
        token_id = uuid.uuid4().hex
        claims = {"sub": str(user_id), "username": username, "role": role, "jti": token_id,
                  "type": "access", "iat": now, "exp": int(now) + self.expires_in}
        return AccessToken(jwt.encode(claims, self._private_key, algorithm=ALGORITHM), token_id, now)


def new_secret() -> tuple[str, str]:
    """A random URL-safe secret for the client and the digest the database keeps."""
    secret = secrets.token_urlsafe(32)
    return secret, secret_digest(secret)


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()
