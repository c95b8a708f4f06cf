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
from typing import Callable

from shared.events import consume_forever, on_user_deleted
from services.gallery.app import create_app
from services.gallery.service import WorksService

log = logging.getLogger(__name__)
GROUP = "gallery"


def handler(works: WorksService) -> Callable[[dict[str, str]], None]:
    def remove(user_id: int) -> None:
        removed = works.remove_user(user_id)
        log.info("user %s deleted: removed %s works and %s likes", user_id, removed["works"], removed["likes"])
    return on_user_deleted(remove)


def main() -> None:
    """``python -m services.gallery.events``: one long-running consumer for the launcher."""
    app = create_app()
    consume_forever(app.extensions["redis"], GROUP, handler(app.extensions["gallery"].works), "gallery-events")


if __name__ == "__main__":
    main()
