"""Consumer of ``platform:events`` (consumer group ``integrations``): on ``user.deleted``
the user's webhooks are deleted (their pending deliveries given up) and, for a service
account, its settings deactivated (its queue is no longer read).

Run it as ``python -m services.integrations.events``. Job outcomes on the same stream are
read by the queue bridge and the webhook dispatcher, each through its own group.
"""
from __future__ import annotations

import logging

from sqlalchemy import select, update

from shared.db import Database, utcnow
from shared.events import consume_forever, on_user_deleted
from services.integrations.app import create_app
from services.integrations.models import ServiceAccount, WebhookDelivery, WebhookEndpoint

log = logging.getLogger(__name__)
GROUP = "integrations"


class DeletedUsers:
    def __init__(self, db: Database) -> None:
        self.db = db

    def remove(self, user_id: int) -> None:
        now = utcnow()
        with self.db.transaction() as session:
            endpoints = list(session.scalars(select(WebhookEndpoint.id).where(
                WebhookEndpoint.user_id == user_id, WebhookEndpoint.deleted_at.is_(None))))
            if endpoints:
                session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id.in_(endpoints)).values(deleted_at=now))
                session.execute(update(WebhookDelivery).where(WebhookDelivery.endpoint_id.in_(endpoints),
                                                              WebhookDelivery.status == "pending")
                                .values(status="failed", last_error="The user was deleted.", next_attempt_at=None))
            session.execute(update(ServiceAccount).where(ServiceAccount.user_id == user_id)
                            .values(is_active=False, updated_at=now))
        log.info("user %s deleted: %s webhooks removed", user_id, len(endpoints))


def main() -> None:
    """``python -m services.integrations.events``: one long-running consumer for the launcher."""
    app = create_app()
    consume_forever(app.extensions["redis"], GROUP, on_user_deleted(DeletedUsers(app.extensions["db"]).remove),
                    "integrations-events")


if __name__ == "__main__":
    main()
