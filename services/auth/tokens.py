"""Signing access tokens (RS256). Only this service holds the private key; everyone
verifies with ``shared.tokens.decode_access_token`` and the public key."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import jwt

from shared.tokens import ALGORITHM


class TokenSigner:
    def __init__(self, private_key_pem: str, access_token_minutes: int) -> None:
        self._private_key = private_key_pem
        self.lifetime = timedelta(minutes=access_token_minutes)

    @property
    def expires_in(self) -> int:
        """Lifetime of an access token in seconds."""
        return int(self.lifetime.total_seconds())

    def access_token(self, user_id: int, username: str, role: str) -> str:
        now = datetime.now(timezone.utc)
        claims = {"sub": str(user_id), "username": username, "role": role, "jti": uuid.uuid4().hex,
                  "type": "access", "iat": now, "exp": now + self.lifetime}
        return jwt.encode(claims, self._private_key, algorithm=ALGORITHM)
