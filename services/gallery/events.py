"""Consumer of the platform announcements stream ``platform:events`` (consumer group
``gallery``): on ``user.deleted`` the user's works, likes, views, reports, notifications
and unreferenced files are removed (``WorksService.remove_user``).

Run it as ``python -m services.gallery.events`` (one per deployment is enough; more share
the work through the group). An entry is acknowledged only after its removal committed, so
a crash redelivers it (as a pending entry) and the removal, being idempotent, simply runs
again.
"""
from __future__ import annotations

import logging

import redis

from shared.events import PLATFORM_STREAM, GroupConsumer, consume_forever, deleted_user_id
from shared.metrics import serve_metrics
from services.gallery.app import create_app
from services.gallery.service import WorksService

log = logging.getLogger(__name__)
GROUP = "gallery"


def handle(works: WorksService, fields: dict[str, str]) -> None:
    user_id = deleted_user_id(fields)
    if user_id is None:
        return
    removed = works.remove_user(user_id)
    log.info("user %s deleted: removed %s works and %s likes", user_id, removed["works"], removed["likes"])


def consumer(works: WorksService, client: redis.Redis, name: str,
             stream: str = PLATFORM_STREAM) -> GroupConsumer:
    return GroupConsumer(client, GROUP, name, lambda fields: handle(works, fields), stream)


def main() -> None:
    """``python -m services.gallery.events``: one long-running consumer for the launcher."""
    app = create_app()
    serve_metrics("gallery-events")
    consume_forever(app.extensions["redis"], GROUP, lambda fields: handle(app.extensions["gallery"].works, fields))


if __name__ == "__main__":
    main()
