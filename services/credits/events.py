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
from typing import Callable

from shared.events import consume_forever, on_user_deleted
from services.credits.app import create_app
from services.credits.service import CreditsService

log = logging.getLogger(__name__)
GROUP = "credits"


def handler(credits: CreditsService) -> Callable[[dict[str, str]], None]:
    def close(user_id: int) -> None:
        closed = credits.close_account(user_id)
        if not closed.already_closed or closed.released:
            log.info("user %s deleted: credit account closed, %s holds released (%s credits)", user_id,
                     len(closed.released), sum(closed.released.values()))
    return on_user_deleted(close)


def main() -> None:
    """``python -m services.credits.events``: one long-running consumer for the launcher."""
    app = create_app()
    consume_forever(app.extensions["redis"], GROUP, handler(app.extensions["credits"]), "credits-events")


if __name__ == "__main__":
    main()
