"""The audit trail: list changes written in the unit of work that makes them; blocks, flags
and review decisions taken elsewhere arrive on the Redis stream ``safety:audit`` and are
stored by ``drain`` (the recorder process, and every read of the log, drains it first).
Searchable, exportable as CSV, kept ``SAFETY_AUDIT_RETENTION_DAYS``. A row may keep a file for
moderators (``media_key``: an image the output check withheld, under ``quarantine/``): the search
(administrators only) answers a short-lived signed URL of it, and retention deletes the file
with the last row naming it."""
from __future__ import annotations

import csv
import io
import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import redis as redis_lib
from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from shared.db import Database, isoformat, utcnow
from shared.storage import QUARANTINE_PREFIX, Storage, StorageError, is_valid_key, remove_unreferenced
from shared.tokens import Claims
from services.safety.client import AUDIT_STREAM, EXCERPT_CHARS
from services.safety.config import SafetyConfig
from services.safety.models import SafetyAudit

DRAIN_LOCK = "safety:audit:drain"
DRAIN_BATCH = 500
CSV_COLUMNS = ("id", "createdAt", "action", "source", "actorId", "actorName", "category", "severity", "subject",
               "excerpt", "detail", "mediaKey")
# A moderator's link to a withheld image lives 5 to 10 minutes (see MediaSigner.sign).
QUARANTINE_URL_TTL_SECONDS = 300

log = logging.getLogger(__name__)


def audit_json(row: SafetyAudit) -> dict[str, Any]:
    return {"id": row.id, "createdAt": isoformat(row.created_at), "action": row.action, "source": row.source,
            "actorId": row.actor_id, "actorName": row.actor_name, "category": row.category,
            "severity": row.severity, "subject": row.subject, "excerpt": row.excerpt, "detail": row.detail,
            "mediaKey": row.media_key}


def _media_key(value: Any) -> str | None:
    """The stream's ``mediaKey`` when it names a quarantined file, else None."""
    if isinstance(value, str) and value.startswith(QUARANTINE_PREFIX) and is_valid_key(value):
        return value
    return None


def _from_stream(event_id: str, fields: dict[str, str]) -> SafetyAudit:
    entry = json.loads(fields["event"])
    at = datetime.fromtimestamp(float(entry.get("at") or 0), timezone.utc).replace(tzinfo=None)
    return SafetyAudit(event_id=event_id, created_at=at, action=str(entry["action"])[:32],
                       source=str(entry["source"])[:64], actor_id=entry.get("actorId"),
                       actor_name=str(entry.get("actorName") or "")[:64], category=entry.get("category"),
                       severity=entry.get("severity"), subject=str(entry.get("subject") or "")[:100],
                       excerpt=str(entry.get("excerpt") or "")[:EXCERPT_CHARS], detail=entry.get("detail") or None,
                       media_key=_media_key(entry.get("mediaKey")))


class AuditLog:
    def __init__(self, db: Database, redis: redis_lib.Redis, config: SafetyConfig, storage: Storage) -> None:
        self.db = db
        self.redis = redis
        self.config = config
        self.storage = storage

    def add(self, session: Session, action: str, source: str, actor: Claims | None, **fields: Any) -> None:
        session.add(SafetyAudit(action=action, source=source, actor_id=actor.user_id if actor else None,
                                actor_name=actor.username if actor else "", created_at=utcnow(), **fields))

    def drain(self) -> int:
        """Store what the stream holds, then trim it; one drainer at a time. Returns rows stored."""
        stored = 0
        try:
            lock = self.redis.lock(DRAIN_LOCK, timeout=60, blocking_timeout=5)
            if not lock.acquire():
                return 0
        except redis_lib.RedisError as exc:
            log.warning("audit stream unreadable (%s)", exc.__class__.__name__)
            return 0
        try:
            while entries := self.redis.xrange(AUDIT_STREAM, count=DRAIN_BATCH):
                ids = [entry_id.decode() if isinstance(entry_id, bytes) else entry_id for entry_id, _ in entries]
                with self.db.transaction() as session:
                    known = set(session.scalars(select(SafetyAudit.event_id).where(SafetyAudit.event_id.in_(ids))))
                    for event_id, (_, raw) in zip(ids, entries):
                        if event_id in known:
                            continue
                        fields = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                                  for k, v in raw.items()}
                        try:
                            session.add(_from_stream(event_id, fields))
                            stored += 1
                        except (KeyError, ValueError, TypeError) as exc:
                            log.error("audit entry %s unreadable (%s); dropped", event_id, exc)
                self.redis.xdel(AUDIT_STREAM, *ids)  # only after the rows committed
        except redis_lib.RedisError as exc:
            log.warning("audit stream not drained (%s)", exc.__class__.__name__)
        finally:
            try:
                lock.release()
            except redis_lib.RedisError:
                pass
        return stored

    def _conditions(self, query: dict[str, Any]) -> list[Any]:
        conditions = []
        for name, column in (("action", SafetyAudit.action), ("category", SafetyAudit.category),
                             ("actor_id", SafetyAudit.actor_id), ("severity", SafetyAudit.severity)):
            if query.get(name) is not None:
                conditions.append(column == query[name])
        if query.get("source"):
            conditions.append(SafetyAudit.source.like(f"{query['source']}%"))
        if query.get("subject"):
            conditions.append(SafetyAudit.subject == query["subject"])
        if query.get("since"):
            conditions.append(SafetyAudit.created_at >= query["since"].astimezone(timezone.utc).replace(tzinfo=None))
        if query.get("until"):
            conditions.append(SafetyAudit.created_at < query["until"].astimezone(timezone.utc).replace(tzinfo=None))
        if query.get("q"):
            like = f"%{query['q']}%"
            conditions.append(or_(SafetyAudit.excerpt.like(like), SafetyAudit.actor_name.like(like),
                                  SafetyAudit.subject.like(like)))
        return conditions

    def search(self, query: dict[str, Any]) -> dict[str, Any]:
        self.drain()
        conditions = self._conditions(query)
        page, size = query["page"], query["page_size"]
        with self.db.read() as session:
            total = session.scalar(select(func.count()).select_from(SafetyAudit).where(*conditions))
            rows = session.scalars(select(SafetyAudit).where(*conditions)
                                   .order_by(SafetyAudit.created_at.desc(), SafetyAudit.id.desc())
                                   .offset((page - 1) * size).limit(size))
            items = [self._with_media_url(audit_json(r)) for r in rows]
            return {"items": items, "total": total, "page": page, "pageSize": size,
                    "retentionDays": self.config.audit_retention_days}

    def _with_media_url(self, item: dict[str, Any]) -> dict[str, Any]:
        """``mediaUrl``: the kept file, by a URL signed for ``QUARANTINE_URL_TTL_SECONDS`` (the search is
        for administrators only; nobody else is ever handed one)."""
        key = item["mediaKey"]
        item["mediaUrl"] = self.storage.signed_url(key, ttl=QUARANTINE_URL_TTL_SECONDS) if key else None
        return item

    def export_csv(self, query: dict[str, Any]) -> Iterator[str]:
        """The matching rows, oldest first, as CSV text (UTF-8 with a BOM, so spreadsheets read Chinese)."""
        self.drain()
        conditions = self._conditions(query)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        buffer.write("\ufeff")
        writer.writerow(CSV_COLUMNS)
        last_id = 0
        while True:
            with self.db.read() as session:
                rows = list(session.scalars(select(SafetyAudit).where(*conditions, SafetyAudit.id > last_id)
                                            .order_by(SafetyAudit.id).limit(1000)))
            for row in rows:
                item = audit_json(row)
                item["detail"] = json.dumps(item["detail"], ensure_ascii=False) if item["detail"] else ""
                writer.writerow(["" if item[c] is None else item[c] for c in CSV_COLUMNS])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            if len(rows) < 1000:
                return
            last_id = rows[-1].id

    def prune(self) -> int:
        """Delete rows older than the retention period, then the files they kept that no
        remaining row names; returns how many rows. The stream is drained first, so a newer
        row naming the same file is counted."""
        self.drain()
        cutoff = utcnow() - timedelta(days=self.config.audit_retention_days)
        old = SafetyAudit.created_at < cutoff
        with self.db.transaction() as session:
            keys = list(session.scalars(select(SafetyAudit.media_key).where(old, SafetyAudit.media_key.is_not(None))
                                        .distinct()))
            removed = session.execute(delete(SafetyAudit).where(old)).rowcount or 0
        try:
            remove_unreferenced(self.storage, keys, self._referenced)
        except (StorageError, OSError) as exc:
            log.error("files of pruned audit rows not all deleted (%s); %s named", exc, len(keys))
        return removed

    def _referenced(self, keys: list[str]) -> set[str]:
        with self.db.read() as session:
            return set(session.scalars(select(SafetyAudit.media_key).where(SafetyAudit.media_key.in_(keys))))
