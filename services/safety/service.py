"""The term list: administrators' changes (each one audited), and its publication to Redis
where every caller's ``ContentFilter`` picks it up."""
from __future__ import annotations

import json
import logging
from typing import Any

import redis as redis_lib
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from shared.db import Database, isoformat, utcnow
from shared.errors import Conflict, NotFound, Unprocessable
from shared.tokens import Claims
from services.safety.audit import AuditLog
from services.safety.client import LIST_KEY, VERSION_KEY
from services.safety.config import SafetyConfig
from services.safety.matcher import nested_quantifier, normalise, validate_pattern
from services.safety.models import SafetyTerm

SEQUENCE_KEY = "safety:terms:sequence"
PUBLISH_LOCK = "safety:terms:publish"

log = logging.getLogger(__name__)


def term_json(term: SafetyTerm) -> dict[str, Any]:
    return {"id": term.id, "text": term.text, "kind": term.kind, "category": term.category,
            "severity": term.severity, "note": term.note, "createdBy": term.created_by,
            "createdAt": isoformat(term.created_at), "updatedAt": isoformat(term.updated_at)}


def _normalised(kind: str, text: str) -> str:
    if kind == "pattern":
        if (problem := validate_pattern(text)) is not None:
            raise Unprocessable("This pattern is not a valid regular expression.", code="INVALID_PATTERN",
                                details={"text": [problem]})
        if nested_quantifier(text):
            raise Unprocessable("This pattern repeats a part that holds a quantifier of its own (like (a+)+), which "
                                "can take exponential time; write it without nesting, or make the inner part atomic "
                                "(?>…) or possessive (a++).", code="UNSAFE_PATTERN",
                                details={"text": ["Nested quantifiers."]})
        return text
    key = normalise(text)
    if not key:
        raise Unprocessable("This term has no letters or digits left once normalised.", code="EMPTY_TERM",
                            details={"text": ["Nothing to match."]})
    return key[:200]


def _duplicate(session: Session, kind: str, key: str, exclude: int | None = None) -> SafetyTerm | None:
    stmt = select(SafetyTerm).where(SafetyTerm.kind == kind, SafetyTerm.normalised == key)
    if exclude is not None:
        stmt = stmt.where(SafetyTerm.id != exclude)
    return session.scalars(stmt).first()


class TermList:
    def __init__(self, db: Database, redis: redis_lib.Redis, audit: AuditLog, config: SafetyConfig) -> None:
        self.db = db
        self.redis = redis
        self.audit = audit
        self.config = config

    def list_terms(self, query: dict[str, Any]) -> dict[str, Any]:
        conditions = []
        for name in ("category", "severity", "kind"):
            if query.get(name):
                conditions.append(getattr(SafetyTerm, name) == query[name])
        if query.get("q"):
            like = f"%{query['q']}%"
            conditions.append(or_(SafetyTerm.text.like(like), SafetyTerm.normalised.like(f"%{normalise(query['q'])}%")))
        page, size = query["page"], query["page_size"]
        with self.db.read() as session:
            total = session.scalar(select(func.count()).select_from(SafetyTerm).where(*conditions))
            rows = session.scalars(select(SafetyTerm).where(*conditions).order_by(SafetyTerm.id.desc())
                                   .offset((page - 1) * size).limit(size))
            return {"items": [term_json(t) for t in rows], "total": total, "page": page, "pageSize": size,
                    "version": self.version()}

    def create(self, admin: Claims, data: dict[str, Any]) -> dict[str, Any]:
        key = _normalised(data["kind"], data["text"])
        with self.db.transaction() as session:
            if (existing := _duplicate(session, data["kind"], key)) is not None:
                raise Conflict("This term is already listed.", code="TERM_EXISTS", details={"termId": existing.id})
            self._room_for(session, 1)
            term = SafetyTerm(text=data["text"], normalised=key, kind=data["kind"], category=data["category"],
                              severity=data["severity"], note=data.get("note", ""), created_by=admin.user_id)
            session.add(term)
            session.flush()
            self.audit.add(session, "term_added", "safety.terms", admin, category=term.category,
                           severity=term.severity, subject=f"term:{term.id}", excerpt=term.text,
                           detail={"kind": term.kind})
            data_out = term_json(term)
        self.publish()
        return data_out

    def bulk(self, admin: Claims, data: dict[str, Any]) -> dict[str, Any]:
        """Add many entries at once (an imported list); already listed ones are skipped."""
        added, skipped, seen = 0, 0, set()
        with self.db.transaction() as session:
            existing = {tuple(row) for row in session.execute(select(SafetyTerm.kind, SafetyTerm.normalised))}
            rows = []
            for item in data["items"]:
                key = _normalised(item["kind"], item["text"])
                if (item["kind"], key) in existing or (item["kind"], key) in seen:
                    skipped += 1
                    continue
                seen.add((item["kind"], key))
                rows.append(SafetyTerm(text=item["text"], normalised=key, kind=item["kind"], category=item["category"],
                                       severity=item["severity"], note=item.get("note", ""), created_by=admin.user_id))
            self._room_for(session, len(rows))
            session.add_all(rows)
            added = len(rows)
            categories = sorted({row.category for row in rows})
            self.audit.add(session, "terms_imported", "safety.terms", admin, subject="terms",
                           excerpt="\n".join(row.text for row in rows[:100]),
                           detail={"added": added, "skipped": skipped, "categories": categories})
        self.publish()
        return {"added": added, "skipped": skipped, "version": self.version()}

    def update(self, admin: Claims, term_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        with self.db.transaction() as session:
            term = self._term(session, term_id, lock=True)
            before = term_json(term)
            kind, text = changes.get("kind", term.kind), changes.get("text", term.text)
            key = _normalised(kind, text)
            if (other := _duplicate(session, kind, key, exclude=term.id)) is not None:
                raise Conflict("This term is already listed.", code="TERM_EXISTS", details={"termId": other.id})
            for name, value in changes.items():
                setattr(term, name, value)
            term.normalised, term.updated_at = key, utcnow()
            session.flush()
            after = term_json(term)
            self.audit.add(session, "term_updated", "safety.terms", admin, category=term.category,
                           severity=term.severity, subject=f"term:{term.id}", excerpt=term.text,
                           detail={"before": {k: before[k] for k in changes_keys(changes)},
                                   "after": {k: after[k] for k in changes_keys(changes)}})
        self.publish()
        return after

    def delete(self, admin: Claims, term_id: int) -> dict[str, Any]:
        with self.db.transaction() as session:
            term = self._term(session, term_id, lock=True)
            self.audit.add(session, "term_removed", "safety.terms", admin, category=term.category,
                           severity=term.severity, subject=f"term:{term.id}", excerpt=term.text,
                           detail={"kind": term.kind})
            session.delete(term)
        self.publish()
        return {"deleted": True}

    def _term(self, session: Session, term_id: int, lock: bool = False) -> SafetyTerm:
        stmt = select(SafetyTerm).where(SafetyTerm.id == term_id)
        term = session.scalars(stmt.with_for_update() if lock else stmt).one_or_none()
        if term is None:
            raise NotFound("This term does not exist.", code="TERM_NOT_FOUND")
        return term

    def _room_for(self, session: Session, count: int) -> None:
        total = session.scalar(select(func.count()).select_from(SafetyTerm))
        if total + count > self.config.max_terms:
            raise Conflict(f"The list may hold at most {self.config.max_terms} entries.", code="TOO_MANY_TERMS",
                           details={"listed": total, "adding": count, "limit": self.config.max_terms})

    # -- publication ------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The whole list as the filter loads it, with the version Redis announces."""
        with self.db.read() as session:
            items = [{"id": t.id, "text": t.text, "kind": t.kind, "category": t.category, "severity": t.severity}
                     for t in session.scalars(select(SafetyTerm).order_by(SafetyTerm.id))]
        return {"version": self.version(), "items": items}

    def republished_snapshot(self) -> dict[str, Any]:
        """For filters that found no list in Redis: publish it again if Redis lost it (a flush,
        a new instance), then answer it."""
        try:
            missing = self.redis.get(VERSION_KEY) is None
        except redis_lib.RedisError:
            missing = False
        if missing:
            self.publish()
        return self.snapshot()

    def version(self) -> int:
        try:
            return int(self.redis.get(VERSION_KEY) or 0)
        except redis_lib.RedisError:
            return 0

    def publish(self) -> bool:
        """Write the list to Redis under a new version (after every change, and at start-up).
        A failure is logged: callers keep their last list until the next publication."""
        try:
            with self.redis.lock(PUBLISH_LOCK, timeout=30, blocking_timeout=30):
                snapshot = self.snapshot()
                version = int(self.redis.incr(SEQUENCE_KEY))
                payload = json.dumps({"version": version, "items": snapshot["items"]}, ensure_ascii=False)
                pipe = self.redis.pipeline(transaction=True)
                pipe.set(LIST_KEY, payload)
                pipe.set(VERSION_KEY, version)
                pipe.execute()
            return True
        except redis_lib.RedisError as exc:
            log.error("term list not published (%s); callers keep their last list", exc.__class__.__name__)
            return False


def changes_keys(changes: dict[str, Any]) -> list[str]:
    return [name for name in ("text", "kind", "category", "severity", "note") if name in changes]
