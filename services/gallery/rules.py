"""What every part of the gallery agrees on about a work: who may see or change it, and
the derived columns kept in step with its fields (listed, search text and terms, tag rows,
trending score)."""
from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from shared.db import utcnow
from shared.errors import Forbidden, NotFound
from shared.tokens import Claims
from services.gallery.models import Work, WorkLike, WorkTag
from services.gallery.search import normalise, search_text, set_terms

MAX_ID = 2**31 - 1
# Trending: every day of age halves a work's weight, i.e. it needs twice the (likes + 1)
# to rank level with a work one day younger. Stored as log2(likes + 1) + age offset, so
# the order never needs recomputing as time passes and can use an index.
TRENDING_HALF_LIFE_SECONDS = 86_400.0
TRENDING_EPOCH = datetime(2025, 1, 1)
# Counting (likes, views, downloads, the trending score) is not editing: those UPDATEs keep
# ``updated_at``, which its onupdate would move, so a work's cached details need only their
# counters laid over them (services/gateway/cache.py).
KEEP_UPDATED_AT = {"updated_at": Work.updated_at}


def hot_score(likes: int, created_at: datetime) -> float:
    return math.log2(max(likes, 0) + 1) + (created_at - TRENDING_EPOCH).total_seconds() / TRENDING_HALF_LIFE_SECONDS


def work_not_found() -> NotFound:
    return NotFound("This work does not exist.", code="WORK_NOT_FOUND")


def may_see(work: Work, viewer: Claims | None) -> bool:
    """Listed works for everyone; anything else only for its owner and administrators."""
    if work.listed:
        return True
    return viewer is not None and (viewer.user_id == work.user_id or viewer.is_admin)


def visible_work(session: Session, work_id: int, viewer: Claims | None, *, lock: bool = False) -> Work:
    """The work if the viewer may see it; otherwise 404 (a private work's existence is not revealed)."""
    if not 1 <= work_id <= MAX_ID:
        raise work_not_found()
    stmt = select(Work).where(Work.id == work_id)
    if lock:
        stmt = stmt.with_for_update()
    work = session.scalars(stmt).one_or_none()
    if work is None or not may_see(work, viewer):
        raise work_not_found()
    return work


def owned_work(session: Session, work_id: int, user: Claims) -> Work:
    work = visible_work(session, work_id, user, lock=True)
    if work.user_id != user.user_id:
        raise Forbidden("Only the author may change this work.", code="NOT_YOUR_WORK")
    return work


def is_liked(session: Session, work_id: int, user_id: int | None) -> bool:
    if user_id is None:
        return False
    stmt = select(WorkLike.id).where(WorkLike.work_id == work_id, WorkLike.user_id == user_id)
    return session.scalar(stmt) is not None


def set_tags(session: Session, work_id: int, tags: list[str]) -> None:
    session.execute(delete(WorkTag).where(WorkTag.work_id == work_id))
    folded = dict.fromkeys(normalise(tag)[:20] for tag in tags)
    if folded:
        session.add_all([WorkTag(work_id=work_id, tag=tag) for tag in folded])


def derive_listed(work: Work) -> None:
    """Listed: public, not hidden, and not waiting for (or refused by) publishing review."""
    work.listed = bool(work.is_public and not work.is_hidden and work.review_state not in ("pending", "rejected"))


def apply_changes(session: Session, work: Work, changes: dict[str, Any]) -> None:
    """Set editable fields and keep the derived columns (listed, search text and terms, tag rows) in step."""
    for field, value in changes.items():
        setattr(work, field, value)
    derive_listed(work)
    work.search_text = search_text(work.title, work.description, work.prompt, work.tags or [])
    if "tags" in changes:
        set_tags(session, work.id, work.tags)
    if changes.keys() & {"title", "description", "tags"}:
        set_terms(session, work)
    work.updated_at = utcnow()
