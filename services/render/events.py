"""Consumer of the platform announcements stream ``platform:events`` (consumer group
``render``): on ``user.deleted`` the user's jobs, outputs, uploads and unreferenced files
are removed (``services.render.erasure``), after their active jobs were cancelled and settled.

Run it as ``python -m services.render.events``. An entry is acknowledged only after the
removal committed; while a job of the user is still running it stays pending and is
handled again a few seconds later.
"""
from __future__ import annotations

import logging
from typing import Callable

from services.render.app import create_app
from services.render.erasure import remove_user
from services.render.service import RenderService
from shared.events import consume_forever, on_user_deleted

log = logging.getLogger(__name__)
GROUP = "render"


def handler(render: RenderService) -> Callable[[dict[str, str]], None]:
    def remove(user_id: int) -> None:
        removed = remove_user(render, user_id)
        log.info("user %s deleted: removed %s jobs, %s outputs, %s uploads and %s files", user_id,
                 removed["jobs"], removed["outputs"], removed["uploads"], removed["files"])
    return on_user_deleted(remove)


def main() -> None:
    """``python -m services.render.events``: one long-running consumer for the launcher."""
    app = create_app()
    consume_forever(app.extensions["redis"], GROUP, handler(app.extensions["render"]), "render-events")


if __name__ == "__main__":
    main()
