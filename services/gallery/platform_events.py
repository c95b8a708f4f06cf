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

from .service import Gallery, remove_user

log = logging.getLogger(__name__)
STREAM = "platform:events"
GROUP = "gallery"


def ensure_group(client: redis.Redis) -> None:
    try:
        # From the start of the stream: deletions announced before the first run still apply.
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def handle(gallery: Gallery, fields: dict[str, str]) -> None:
    if fields.get("type") != "user.deleted":
        return
    try:
        user_id = int(fields["userId"])
    except (KeyError, ValueError):
        log.error("user.deleted without a valid userId: %r; skipped", fields)
        return
    removed = remove_user(gallery, user_id)
    log.info("user %s deleted: removed %s works and %s likes", user_id, removed["works"], removed["likes"])


def consume_once(gallery: Gallery, client: redis.Redis, consumer: str, block_ms: int = 5000) -> int:
    """Handle this consumer's pending entries, then new ones (waiting up to ``block_ms``); returns how many."""
    handled = 0
    for start in ("0", ">"):
        batches = client.xreadgroup(GROUP, consumer, {STREAM: start}, count=100,
                                    block=block_ms if start == ">" else None)
        for _stream, entries in batches or []:
            for entry_id, fields in entries:
                handle(gallery, fields)
                client.xack(STREAM, GROUP, entry_id)
                handled += 1
    return handled


def consume_forever(gallery: Gallery, client: redis.Redis, consumer: str, stop: threading.Event) -> None:
    ensure_group(client)
    while not stop.is_set():
        try:
            consume_once(gallery, client, consumer)
        except redis.RedisError as exc:
            log.warning("platform events unreadable (%s); retrying in 5 s", exc)
            stop.wait(5)
