"""Announcements auth makes to other services on ``platform:events`` (``shared.events``)."""
from __future__ import annotations

import redis

from shared.events import announce


def publish_user_deleted(client: redis.Redis, user_id: int) -> str:
    """Tell credits and gallery to close the account and remove the user's works and files."""
    return announce(client, "user.deleted", userId=str(user_id))
