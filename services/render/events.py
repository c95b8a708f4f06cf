"""Consumer of the platform announcements stream ``platform:events`` (consumer group
``render``): on ``user.deleted`` the user's jobs, outputs, uploads and unreferenced files
are removed (``services.render.erasure``), after their active jobs were cancelled and settled.

Run it as ``python -m services.render.events``. An entry is acknowledged only after the
removal committed; while a job of the user is still running it stays pending and is
handled again a few seconds later.
"""
from __future__ import annotations

import logging

import redis

from services.render.app import create_app
from services.render.erasure import remove_user
from services.render.service import RenderService
from shared.events import PLATFORM_STREAM, GroupConsumer, consume_forever, deleted_user_id
from shared.metrics import serve_metrics

log = logging.getLogger(__name__)
GROUP = "render"


def handle(render: RenderService, fields: dict[str, str]) -> None:
    user_id = deleted_user_id(fields)
    if user_id is None:
        return
    removed = remove_user(render, user_id)
    log.info("user %s deleted: removed %s jobs, %s outputs, %s uploads and %s files", user_id,
             removed["jobs"], removed["outputs"], removed["uploads"], removed["files"])


def consumer(render: RenderService, client: redis.Redis, name: str,
             stream: str = PLATFORM_STREAM) -> GroupConsumer:
    return GroupConsumer(client, GROUP, name, lambda fields: handle(render, fields), stream)


def main() -> None:
    """``python -m services.render.events``: one long-running consumer for the launcher."""
    app = create_app()
    serve_metrics("render-events")
    consume_forever(app.extensions["redis"], GROUP, lambda fields: handle(app.extensions["render"], fields))


if __name__ == "__main__":
    main()
