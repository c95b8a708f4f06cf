"""Gallery domain: saving render outputs as works, listing, editing and liking them.

Every write is one transaction. A like and its counter change together; the unique
(work_id, user_id) pair decides a concurrent double like, so the counter only moves
when a like row was really inserted or deleted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db import Database, utcnow
from shared.errors import Conflict, Forbidden, NotFound
from shared.storage import LocalStorage
from shared.tokens import Claims

from .models import Work, WorkLike
from .outputs import OutputsClient
from .schemas import dump_work

MAX_ID = 2**31 - 1
SORT_ORDERS = {
    "newest": (Work.created_at.desc(), Work.id.desc()),
    "likes": (Work.likes_count.desc(), Work.id.desc()),
    "views": (Work.views_count.desc(), Work.id.desc()),
}


@dataclass(frozen=True)
class Gallery:
    """What the gallery's functions depend on, built once per app."""

    db: Database
    outputs: OutputsClient
    storage: LocalStorage


def _work_not_found() -> NotFound:
    return NotFound("This work does not exist.", code="WORK_NOT_FOUND")


def _visible_work(session: Session, work_id: int, viewer_id: int | None, *, lock: bool = False) -> Work:
    """The work if it is public or the viewer's own; a private work of another is a 404, not a 403."""
    if not 1 <= work_id <= MAX_ID:
        raise _work_not_found()
    stmt = select(Work).where(Work.id == work_id)
    if lock:
        stmt = stmt.with_for_update()
    work = session.scalars(stmt).one_or_none()
    if work is None or (not work.is_public and work.user_id != viewer_id):
        raise _work_not_found()
    return work


def _owned_work(session: Session, work_id: int, user_id: int) -> Work:
    work = _visible_work(session, work_id, user_id, lock=True)
    if work.user_id != user_id:
        raise Forbidden("Only the author may change this work.", code="NOT_YOUR_WORK")
    return work


def _is_liked(session: Session, work_id: int, user_id: int | None) -> bool:
    if user_id is None:
        return False
    stmt = select(WorkLike.id).where(WorkLike.work_id == work_id, WorkLike.user_id == user_id)
    return session.scalar(stmt) is not None


def _dump(gallery: Gallery, session: Session, work: Work, viewer_id: int | None) -> dict[str, Any]:
    return dump_work(work, viewer_id=viewer_id, is_liked=_is_liked(session, work.id, viewer_id),
                     storage=gallery.storage)


def _already_saved(session: Session, output_id: str) -> Conflict:
    work_id = session.scalar(select(Work.id).where(Work.output_id == output_id))
    return Conflict("This output is already saved as a work.", code="ALREADY_SAVED",
                    details={"workId": work_id})


def save_work(gallery: Gallery, user: Claims, data: dict[str, Any]) -> dict[str, Any]:
    """Save one of the caller's render outputs as a work (one work per output)."""
    output = gallery.outputs.get_output(data["output_id"])
    if output.user_id != user.user_id:
        raise Forbidden("This output belongs to someone else.", code="NOT_YOUR_OUTPUT")
    with gallery.db.transaction() as session:
        if session.scalar(select(Work.id).where(Work.output_id == output.id)) is not None:
            raise _already_saved(session, output.id)
        now = utcnow()
        work = Work(
            user_id=user.user_id, author_username=user.username, output_id=output.id,
            job_id=output.job_id, title=data["title"], description=data.get("description", ""),
            tags=data.get("tags", []), is_public=data.get("is_public", True),
            image_key=output.image_key, thumbnail_key=output.thumbnail_key,
            width=output.width, height=output.height, file_size=output.file_size,
            sha256=output.sha256, workflow=output.workflow, params=output.params,
            prompt=str(output.params.get("prompt") or ""), likes_count=0, views_count=0,
            created_at=now, updated_at=now,
        )
        try:
            with session.begin_nested():
                session.add(work)
        except IntegrityError:
            raise _already_saved(session, output.id) from None
        return dump_work(work, viewer_id=user.user_id, is_liked=False, storage=gallery.storage)


def _search(term: str) -> ColumnElement[bool]:
    return or_(Work.title.icontains(term, autoescape=True),
               Work.description.icontains(term, autoescape=True),
               Work.prompt.icontains(term, autoescape=True))


def _page(gallery: Gallery, conditions: list[ColumnElement[bool]], query: dict[str, Any],
          sort: str, viewer_id: int | None) -> dict[str, Any]:
    if query["search"]:
        conditions = [*conditions, _search(query["search"])]
    page, page_size = query["page"], query["page_size"]
    with gallery.db.read() as session:
        total = session.scalar(select(func.count()).select_from(Work).where(*conditions))
        works = session.scalars(select(Work).where(*conditions).order_by(*SORT_ORDERS[sort])
                                .offset((page - 1) * page_size).limit(page_size)).all()
        liked: set[int] = set()
        if viewer_id is not None and works:
            liked = set(session.scalars(select(WorkLike.work_id).where(
                WorkLike.user_id == viewer_id, WorkLike.work_id.in_([w.id for w in works]))))
    items = [dump_work(w, viewer_id=viewer_id, is_liked=w.id in liked, storage=gallery.storage)
             for w in works]
    return {"items": items, "page": page, "pageSize": page_size, "total": total}


def list_gallery(gallery: Gallery, viewer: Claims | None, query: dict[str, Any]) -> dict[str, Any]:
    """Public works, newest / most liked / most viewed first."""
    return _page(gallery, [Work.is_public.is_(True)], query, query["sort"],
                 viewer.user_id if viewer else None)


def list_my_works(gallery: Gallery, user: Claims, query: dict[str, Any]) -> dict[str, Any]:
    """The caller's own works, public and private, newest first."""
    return _page(gallery, [Work.user_id == user.user_id], query, "newest", user.user_id)


def get_work(gallery: Gallery, viewer: Claims | None, work_id: int) -> dict[str, Any]:
    """One work; reading does not count a view."""
    viewer_id = viewer.user_id if viewer else None
    with gallery.db.read() as session:
        return _dump(gallery, session, _visible_work(session, work_id, viewer_id), viewer_id)


def update_work(gallery: Gallery, user: Claims, work_id: int, changes: dict[str, Any]) -> dict[str, Any]:
    with gallery.db.transaction() as session:
        work = _owned_work(session, work_id, user.user_id)
        for field, value in changes.items():
            setattr(work, field, value)
        session.flush()
        return _dump(gallery, session, work, user.user_id)


def delete_work(gallery: Gallery, user: Claims, work_id: int) -> dict[str, Any]:
    """Delete the work and its likes. Its files stay: they are content-addressed and shared with the output."""
    with gallery.db.transaction() as session:
        work = _owned_work(session, work_id, user.user_id)
        session.execute(delete(WorkLike).where(WorkLike.work_id == work.id))
        session.delete(work)
    return {"deleted": True}


def _add_like(session: Session, work_id: int, user_id: int) -> None:
    try:
        with session.begin_nested():
            session.execute(insert(WorkLike).values(work_id=work_id, user_id=user_id, created_at=utcnow()))
    except IntegrityError:
        return  # already liked: the unique pair holds, the counter stays
    session.execute(update(Work).where(Work.id == work_id).values(likes_count=Work.likes_count + 1)
                    .execution_options(synchronize_session=False))


def _remove_like(session: Session, work_id: int, user_id: int) -> None:
    removed = session.execute(delete(WorkLike).where(WorkLike.work_id == work_id, WorkLike.user_id == user_id))
    if removed.rowcount:
        session.execute(update(Work).where(Work.id == work_id).values(likes_count=Work.likes_count - 1)
                        .execution_options(synchronize_session=False))


def _like_state(session: Session, work_id: int, user_id: int) -> dict[str, Any]:
    likes = session.scalar(select(Work.likes_count).where(Work.id == work_id))
    return {"workId": work_id, "likes": likes, "isLiked": _is_liked(session, work_id, user_id)}


def like_work(gallery: Gallery, user: Claims, work_id: int) -> dict[str, Any]:
    """Like (idempotent)."""
    with gallery.db.transaction() as session:
        work = _visible_work(session, work_id, user.user_id, lock=True)
        _add_like(session, work.id, user.user_id)
        return _like_state(session, work.id, user.user_id)


def unlike_work(gallery: Gallery, user: Claims, work_id: int) -> dict[str, Any]:
    """Unlike (idempotent)."""
    with gallery.db.transaction() as session:
        work = _visible_work(session, work_id, user.user_id, lock=True)
        _remove_like(session, work.id, user.user_id)
        return _like_state(session, work.id, user.user_id)


def toggle_like(gallery: Gallery, user: Claims, work_id: int) -> dict[str, Any]:
    """Like if not liked yet, else unlike (the original product's single button)."""
    with gallery.db.transaction() as session:
        work = _visible_work(session, work_id, user.user_id, lock=True)
        if _is_liked(session, work.id, user.user_id):
            _remove_like(session, work.id, user.user_id)
        else:
            _add_like(session, work.id, user.user_id)
        return _like_state(session, work.id, user.user_id)
