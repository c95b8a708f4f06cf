"""Announcements to other services on the Redis stream ``platform:events``.

Consumers (credits, gallery) read it with their own consumer groups, so each sees every
event once even while it was down. Entries are ``{"type", "userId", "ts"}`` strings.
"""
from __future__ import annotations

from datetime import datetime, timezone

import redis

PLATFORM_STREAM = "platform:events"
# Generous: consumer groups read within seconds; the cap only bounds a stream nobody reads.
PLATFORM_STREAM_MAXLEN = 100_000


def publish_user_deleted(client: redis.Redis, user_id: int) -> str:
    """Tell credits and gallery to close the account and remove the user's works and files."""
    fields = {"type": "user.deleted", "userId": str(user_id),
              "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")}
    return client.xadd(PLATFORM_STREAM, fields, maxlen=PLATFORM_STREAM_MAXLEN, approximate=True)
