"""Consumer of the platform announcements stream ``platform:events`` (consumer group
``gallery``): on ``user.deleted`` the user's works, likes, views, reports, notifications
and unreferenced files are removed.

Run it as ``flask --app services.gallery.app:create_app gallery consume-events`` (one per
deployment is enough; more share the work through the group). An entry is acknowledged
only after its removal committed, so a crash redelivers it (as a pending entry) and the
removal, being idempotent, simply runs again.
"""
from __future__ import annotations

import logging
import threading

import redis

from shared import events
from shared.events import PLATFORM_STREAM, GroupConsumer, deleted_user_id

from services.gallery.service import WorksService

log = logging.getLogger(__name__)
STREAM = PLATFORM_STREAM
GROUP = "gallery"


def ensure_group(client: redis.Redis) -> None:
    events.ensure_group(client, GROUP, STREAM)


def handle(works: WorksService, fields: dict[str, str]) -> None:
    user_id = deleted_user_id(fields)
    if user_id is None:
        return
    removed = works.remove_user(user_id)
    log.info("user %s deleted: removed %s works and %s likes", user_id, removed["works"], removed["likes"])


def consumer(works: WorksService, client: redis.Redis, name: str) -> GroupConsumer:
    return GroupConsumer(client, GROUP, name, lambda fields: handle(works, fields), STREAM)


def consume_once(works: WorksService, client: redis.Redis, name: str, block_ms: int = 5000) -> int:
    """Handle pending entries, then new ones (waiting up to ``block_ms``); returns how many."""
    return consumer(works, client, name).consume_once(block_ms)


def consume_forever(works: WorksService, client: redis.Redis, name: str, stop: threading.Event) -> None:
    consumer(works, client, name).run(stop)
