"""The auth service's outbox: platform announcements (``user.deleted``) that must not be lost.

A deletion writes its announcement into ``auth_outbox`` in the same transaction that
deletes the user; after the commit the request tries to send it at once. Whatever Redis
did not take (it was down, or the process died in between) is sent by the relay process,
``python -m services.auth.relay`` (``make run`` starts it as ``auth-outbox``), every
``AUTH_OUTBOX_INTERVAL_SECONDS``. An entry leaves the outbox only once Redis has it.

Delivery is at least once: a relay that dies between sending and deleting sends again,
and the consumers (credits, gallery) handle a repeated ``user.deleted`` as a no-op.
"""
from __future__ import annotations

import json
import logging

import redis
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from shared.db import Database, utcnow
from shared.events import announce
from services.auth.models import OutboxEntry

log = logging.getLogger(__name__)

BATCH = 100


class Outbox:
    def __init__(self, db: Database, events: redis.Redis) -> None:
        self.db = db
        self.events = events

    @staticmethod
    def add(session: Session, event_type: str, **fields: str) -> None:
        """Queue an announcement in the caller's unit of work."""
        session.add(OutboxEntry(event_type=event_type, fields=json.dumps(fields), created_at=utcnow(), attempts=0))

    def relay(self) -> int:
        """Send what the outbox holds, oldest first; returns how many were sent. Stops at the
        first failure (Redis down): the rest waits for the next pass."""
        sent = 0
        while True:
            with self.db.read() as session:
                entries = session.scalars(select(OutboxEntry).order_by(OutboxEntry.id).limit(BATCH)).all()
            for entry in entries:
                try:
                    announce(self.events, entry.event_type, **json.loads(entry.fields))
                except redis.RedisError:
                    with self.db.transaction() as session:
                        session.execute(update(OutboxEntry).where(OutboxEntry.id == entry.id)
                                        .values(attempts=OutboxEntry.attempts + 1))
                    raise
                with self.db.transaction() as session:
                    session.execute(delete(OutboxEntry).where(OutboxEntry.id == entry.id))
                sent += 1
            if len(entries) < BATCH:
                return sent

    def relay_now(self) -> None:
        """After a commit: send at once if Redis answers; otherwise the relay process will."""
        try:
            self.relay()
        except redis.RedisError as exc:
            log.warning("announcement kept in the outbox for the relay (Redis: %s)", exc)

