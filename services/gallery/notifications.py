"""Notifications: stored per user, pushed live as ``notification.created`` after commit.

Gallery raises its own (a like, a feature, a hide or restore); other services post theirs
to ``POST /internal/notifications`` (credits on an admin grant, the render worker when a
job fails).
"""
from __future__ import annotations

import logging
from typing import Any

import redis
from sqlalchemy import delete, false, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db import Database, after_commit, utcnow
from shared.errors import NotFound
from shared.events import EventBus
from shared.tokens import Claims
from services.gallery.models import Notification
from services.gallery.schemas import notification_json

log = logging.getLogger(__name__)
EVENT_TYPE = "notification.created"


def _unread(session: Session, user_id: int) -> int:
    return session.scalar(select(func.count()).select_from(Notification).where(
        Notification.user_id == user_id, Notification.is_read == false())) or 0


def _own(session: Session, user: Claims, note_id: int) -> Notification:
    note = session.scalars(select(Notification).where(
        Notification.id == note_id, Notification.user_id == user.user_id)).one_or_none()
    if note is None:
        raise NotFound("This notification does not exist.", code="NOTIFICATION_NOT_FOUND")
    return note


class Notifications:
    def __init__(self, db: Database, events: EventBus) -> None:
        self.db = db
        self.events = events

    def notify(self, session: Session, user_id: int, kind: str, title: str, body: str = "",
               data: dict[str, Any] | None = None, dedupe_key: str | None = None) -> Notification | None:
        """Add a notification in the caller's transaction; None if ``dedupe_key`` was already used."""
        note = Notification(user_id=user_id, type=kind, title=title[:200], body=body[:1000], data=data or {},
                            dedupe_key=dedupe_key, is_read=False, created_at=utcnow())
        try:
            with session.begin_nested():
                session.add(note)
                session.flush()
        except IntegrityError:
            return None
        payload = notification_json(note)
        after_commit(session, lambda: self._push(user_id, payload))
        return note

    def _push(self, user_id: int, payload: dict[str, Any]) -> None:
        try:
            self.events.publish(user_id, EVENT_TYPE, payload)
        except redis.RedisError as exc:  # stored already; the bell shows it on the next fetch
            log.warning("notification %s not pushed live: %s", payload["id"], exc)

    def create_from_service(self, data: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """``POST /internal/notifications``; (notification, created). A repeated dedupeKey returns the first."""
        with self.db.transaction() as session:
            note = self.notify(session, data["user_id"], data["type"], data["title"], data.get("body", ""),
                               data.get("data"), data.get("dedupe_key"))
            if note is not None:
                return notification_json(note), True
            existing = session.scalars(select(Notification).where(
                Notification.user_id == data["user_id"], Notification.dedupe_key == data["dedupe_key"])).one()
            return notification_json(existing), False

    def list_notifications(self, user: Claims, query: dict[str, Any]) -> dict[str, Any]:
        conditions = [Notification.user_id == user.user_id]
        if query["status"] != "all":
            conditions.append(Notification.is_read.is_(query["status"] == "read"))
        if query.get("type"):
            conditions.append(Notification.type == query["type"])
        if query.get("before"):
            conditions.append(Notification.id < query["before"])
        size = query["page_size"]
        with self.db.read() as session:
            notes = list(session.scalars(select(Notification).where(*conditions)
                                         .order_by(Notification.id.desc()).limit(size + 1)))
            unread = _unread(session, user.user_id)
        more = len(notes) > size
        notes = notes[:size]
        return {"items": [notification_json(note) for note in notes], "unreadCount": unread,
                "nextBefore": notes[-1].id if more else None}

    def unread_count(self, user: Claims) -> dict[str, int]:
        with self.db.read() as session:
            return {"unreadCount": _unread(session, user.user_id)}

    def mark_read(self, user: Claims, note_id: int) -> dict[str, Any]:
        with self.db.transaction() as session:
            note = _own(session, user, note_id)
            if not note.is_read:
                note.is_read, note.read_at = True, utcnow()
            session.flush()
            return {"notification": notification_json(note), "unreadCount": _unread(session, user.user_id)}

    def mark_all_read(self, user: Claims) -> dict[str, int]:
        with self.db.transaction() as session:
            changed = session.execute(update(Notification).where(
                Notification.user_id == user.user_id, Notification.is_read == false())
                .values(is_read=True, read_at=utcnow())).rowcount
        return {"marked": changed, "unreadCount": 0}

    def delete_notification(self, user: Claims, note_id: int) -> dict[str, Any]:
        with self.db.transaction() as session:
            _own(session, user, note_id)
            session.execute(delete(Notification).where(Notification.id == note_id))
            return {"deleted": True, "unreadCount": _unread(session, user.user_id)}
