"""Writing the Redis revocation marks that every service checks on every request
(flask-jwt-extended's blocklist loader in ``shared.tokens``).

Marks are written inside the unit of work, just before it commits: if Redis cannot take
them the change is rolled back (503), so a disabled user or a changed password never
leaves live tokens behind. Other side effects (mail, the ``user.deleted`` announcement,
removing files) run after commit.
"""
from __future__ import annotations

import time

import redis

from shared.errors import ServiceUnavailable
from shared.tokens import revoked_api_token_key, revoked_token_key, revoked_user_key


class Revocations:
    """Marks live exactly one access-token lifetime: after that every token they cover has expired."""

    def __init__(self, client: redis.Redis, access_token_seconds: int) -> None:
        self.redis = client
        self.ttl = access_token_seconds

    def revoke_tokens(self, token_ids: list[str]) -> None:
        if token_ids:
            self._write({revoked_token_key(token_id): "1" for token_id in token_ids})

    def revoke_api_token(self, api_token_id: str) -> None:
        """Refuse at once every access token exchanged for this API token."""
        self._write({revoked_api_token_key(api_token_id): "1"})

    def revoke_user(self, user_id: int) -> float:
        """Refuse every access token of the user issued until now; returns the revocation time."""
        at = round(time.time(), 3)
        self._write({revoked_user_key(user_id): repr(at)})
        return at

    def _write(self, marks: dict[str, str]) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            for key, value in marks.items():
                pipe.set(key, value, ex=self.ttl)
            pipe.execute()
        except redis.RedisError as exc:
            raise ServiceUnavailable("Sessions cannot be ended right now; try again shortly.",
                                     code="REVOCATION_UNAVAILABLE") from exc
