"""Consumer of the platform announcements stream ``platform:events`` (consumer group
``credits``): on ``user.deleted`` the user's credit account is closed — open holds are
released and every later movement is refused (``CreditsService.close_account``). The
ledger stays: it is the financial record.

Run it as ``python -m services.credits.events`` (one per deployment is enough; more share
the work through the group). An entry is acknowledged only after the closing committed, so
a crash redelivers it and the closing, being idempotent, changes nothing the second time.
"""
from __future__ import annotations

import logging

import redis

from shared.events import PLATFORM_STREAM, GroupConsumer, consume_forever, deleted_user_id
from shared.metrics import serve_metrics
from services.credits.app import create_app
from services.credits.service import CreditsService

log = logging.getLogger(__name__)
GROUP = "credits"


def handle(credits: CreditsService, fields: dict[str, str]) -> None:
    user_id = deleted_user_id(fields)
    if user_id is None:
        return
    closed = credits.close_account(user_id)
    if not closed.already_closed or closed.released:
        log.info("user %s deleted: credit account closed, %s holds released (%s credits)", user_id,
                 len(closed.released), sum(closed.released.values()))


def consumer(credits: CreditsService, client: redis.Redis, name: str,
             stream: str = PLATFORM_STREAM) -> GroupConsumer:
    return GroupConsumer(client, GROUP, name, lambda fields: handle(credits, fields), stream)


def main() -> None:
    """``python -m services.credits.events``: one long-running consumer for the launcher."""
    app = create_app()
    serve_metrics("credits-events")
    consume_forever(app.extensions["redis"], GROUP, lambda fields: handle(app.extensions["credits"], fields))


if __name__ == "__main__":
    main()
