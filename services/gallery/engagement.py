"""Likes, views, downloads and reports.

A like and its counter change together in one transaction; the unique (work, user) pair
decides a concurrent double like, so the counter only moves when a row really changed. Once
it commits, the user's set of liked works in Redis follows (``liked.py``). A changed counter
is written to the edge cache's counters of the work before its transaction commits
(``services/gateway/client.py``), so a cached work's details show it at once.
Views and downloads count once per viewer per window: the viewer's ``work_hits`` row is
claimed with one conditional UPDATE (or a first INSERT guarded by a unique key), so two
simultaneous requests of one viewer count once.
"""
from __future__ import annotations

import hashlib
import mimetypes
import re
import unicodedata
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db import Database, utcnow
from shared.errors import Conflict, Forbidden
from shared.tokens import Claims
from services.gallery.files import WorkFiles
from services.gallery.labels import WorkLabels
from services.gallery.liked import LikedSets
from services.gallery.models import Work, WorkHit, WorkLike, WorkReport
from services.gallery.notifications import Notifications
from services.gallery.review import ReviewPolicy
from services.gallery.rules import KEEP_UPDATED_AT, hot_score, is_liked, visible_work
from services.gallery.schemas import filed_report_json
from services.gateway.client import EdgeCacheClient


@dataclass(frozen=True)
class Visitor:
    """Who is looking: a signed-in user, or an anonymous client address + user agent."""

    user: Claims | None
    address: str
    user_agent: str

    @property
    def key(self) -> str:
        if self.user is not None:
            return f"u:{self.user.user_id}"
        digest = hashlib.sha256(f"{self.address}\n{self.user_agent}".encode()).hexdigest()
        return f"a:{digest[:40]}"


@dataclass(frozen=True)
class Download:
    data: bytes
    mimetype: str
    content_disposition: str


def _claim_hit(session: Session, work_id: int, kind: str, viewer: str, window: timedelta) -> bool:
    """True if this viewer's hit counts now (none within ``window``), recording it."""
    now = utcnow()
    claimed = session.execute(update(WorkHit).where(
        WorkHit.work_id == work_id, WorkHit.kind == kind, WorkHit.viewer == viewer,
        WorkHit.counted_at <= now - window).values(counted_at=now)).rowcount
    if claimed:
        return True
    if session.scalar(select(WorkHit.id).where(WorkHit.work_id == work_id, WorkHit.kind == kind,
                                               WorkHit.viewer == viewer)) is not None:
        return False
    try:
        with session.begin_nested():
            session.execute(insert(WorkHit).values(work_id=work_id, kind=kind, viewer=viewer, counted_at=now))
    except IntegrityError:
        return False  # a simultaneous request of the same viewer counted it
    return True


def _filename(title: str, work_id: int, extension: str) -> tuple[str, str]:
    """(UTF-8 name, ASCII fallback) for Content-Disposition, without path or control characters."""
    cleaned = "".join(ch for ch in unicodedata.normalize("NFC", title)
                      if unicodedata.category(ch)[0] != "C" and ch not in '\\/:*?"<>|').strip(" .")
    name = (cleaned or f"work-{work_id}")[:100]
    fallback = re.sub(r"[^A-Za-z0-9._ -]+", "_", name).strip("_ .") or f"work-{work_id}"
    return f"{name}.{extension}", f"{fallback}.{extension}"


class Engagement:
    def __init__(self, db: Database, files: WorkFiles, labels: WorkLabels, notifications: Notifications,
                 view_window: timedelta, download_window: timedelta, review: ReviewPolicy,
                 liked_sets: LikedSets, edge_cache: EdgeCacheClient, featured_likes: int) -> None:
        self.db = db
        self.edge_cache = edge_cache
        self.featured_likes = featured_likes
        self.liked_sets = liked_sets
        self.review = review
        self.files = files
        self.labels = labels
        self.notifications = notifications
        self.view_window = view_window
        self.download_window = download_window

    # Likes

    def _recount(self, session: Session, work_id: int, delta: int) -> None:
        session.execute(update(Work).where(Work.id == work_id)
                        .values(likes_count=Work.likes_count + delta, **KEEP_UPDATED_AT)
                        .execution_options(synchronize_session=False))
        likes, created_at = session.execute(select(Work.likes_count, Work.created_at)
                                            .where(Work.id == work_id)).one()
        session.execute(update(Work).where(Work.id == work_id)
                        .values(hot_score=hot_score(likes, created_at), **KEEP_UPDATED_AT)
                        .execution_options(synchronize_session=False))
        if (likes >= self.featured_likes) != (likes - delta >= self.featured_likes):
            self.edge_cache.changed_after_commit(session)  # "featured" changed with the count

    def _like_state(self, session: Session, work_id: int, user_id: int) -> dict[str, Any]:
        """The answer to a like or unlike, whose transaction holds the work's row; its count
        goes to the edge cache's counters too (``EdgeCacheClient.set_counters``)."""
        likes = session.scalar(select(Work.likes_count).where(Work.id == work_id))
        self.edge_cache.set_counters(work_id, likes=likes)
        return {"workId": work_id, "likes": likes, "isLiked": is_liked(session, work_id, user_id)}

    def _add_like(self, session: Session, work: Work, user: Claims) -> None:
        try:
            with session.begin_nested():
                session.execute(insert(WorkLike).values(work_id=work.id, user_id=user.user_id, created_at=utcnow()))
        except IntegrityError:
            return  # already liked: the unique pair holds, the counter stays
        self._recount(session, work.id, +1)
        self.liked_sets.changed_after_commit(session, user.user_id, [work.id], True)
        if work.user_id != user.user_id:
            self.notifications.notify(
                session, work.user_id, "work.liked", f"{user.username} liked “{work.title}”",
                data={"workId": work.id, "userId": user.user_id, "username": user.username},
                dedupe_key=f"like:{work.id}:{user.user_id}")

    def _remove_like(self, session: Session, work_id: int, user_id: int) -> None:
        removed = session.execute(delete(WorkLike).where(WorkLike.work_id == work_id, WorkLike.user_id == user_id))
        if removed.rowcount:
            self._recount(session, work_id, -1)
            self.liked_sets.changed_after_commit(session, user_id, [work_id], False)

    def like_work(self, user: Claims, work_id: int) -> dict[str, Any]:
        """Like (idempotent)."""
        with self.db.transaction() as session:
            work = visible_work(session, work_id, user, lock=True)
            self._add_like(session, work, user)
            return self._like_state(session, work.id, user.user_id)

    def unlike_work(self, user: Claims, work_id: int) -> dict[str, Any]:
        """Unlike (idempotent)."""
        with self.db.transaction() as session:
            work = visible_work(session, work_id, user, lock=True)
            self._remove_like(session, work.id, user.user_id)
            return self._like_state(session, work.id, user.user_id)

    def toggle_like(self, user: Claims, work_id: int) -> dict[str, Any]:
        """Like if not liked yet, else unlike (the original product's single button)."""
        with self.db.transaction() as session:
            work = visible_work(session, work_id, user, lock=True)
            if is_liked(session, work.id, user.user_id):
                self._remove_like(session, work.id, user.user_id)
            else:
                self._add_like(session, work, user)
            return self._like_state(session, work.id, user.user_id)

    def liked_among(self, user_id: int, work_ids: list[int]) -> list[int]:
        """Which of ``work_ids`` the user likes. Asked when the user's set in Redis is missing
        (or unreadable): every like of the user is read (the ``user_id`` index) and the set
        rebuilt from it (``LikedSets.rebuild``)."""
        def read() -> list[int]:
            with self.db.read() as session:
                return list(session.scalars(select(WorkLike.work_id).where(WorkLike.user_id == user_id)))

        wanted = set(work_ids)
        return sorted(work_id for work_id in self.liked_sets.rebuild(user_id, read) if work_id in wanted)

    # Views and downloads

    def record_view(self, visitor: Visitor, work_id: int) -> dict[str, Any]:
        """Count a view unless it is the owner's or the same viewer's within the window."""
        with self.db.transaction() as session:
            work = visible_work(session, work_id, visitor.user)
            if visitor.user is not None and visitor.user.user_id == work.user_id:
                return {"workId": work.id, "views": work.views_count, "counted": False, "reason": "owner"}
            counted = _claim_hit(session, work.id, "view", visitor.key, self.view_window)
            if counted:
                session.execute(update(Work).where(Work.id == work.id)
                                .values(views_count=Work.views_count + 1, **KEEP_UPDATED_AT)
                                .execution_options(synchronize_session=False))
            views = session.scalar(select(Work.views_count).where(Work.id == work.id))
            if counted:
                self.edge_cache.set_counters(work.id, views=views)
            return {"workId": work.id, "views": views, "counted": counted,
                    "reason": None if counted else "recently_counted"}

    def download(self, visitor: Visitor, work_id: int) -> Download:
        """The original image with the AI-content labels (``labels.py``), named after the title; counted
        once per viewer per window (not the owner's)."""
        with self.db.read() as session:
            work = visible_work(session, work_id, visitor.user)
        data = self.labels.download(self.files.read_image(work), work.id)
        if visitor.user is None or visitor.user.user_id != work.user_id:
            with self.db.transaction() as session:
                if _claim_hit(session, work.id, "download", visitor.key, self.download_window):
                    session.execute(update(Work).where(Work.id == work.id)
                                    .values(downloads_count=Work.downloads_count + 1, **KEEP_UPDATED_AT)
                                    .execution_options(synchronize_session=False))
                    downloads = session.scalar(select(Work.downloads_count).where(Work.id == work.id))
                    self.edge_cache.set_counters(work.id, downloads=downloads)
        extension = work.image_key.rsplit(".", 1)[-1]
        name, fallback = _filename(work.title, work.id, extension)
        disposition = f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
        return Download(data, mimetypes.guess_type(work.image_key)[0] or "application/octet-stream", disposition)

    # Reports

    def report_work(self, user: Claims, work_id: int, reason: str) -> dict[str, Any]:
        """File a report; its reason is matched against the term list like any submitted text."""
        self.review.filter.check({"reason": reason}, source="gallery.report", actor_id=user.user_id,
                                 actor_name=user.username, subject=f"work:{work_id}")
        with self.db.transaction() as session:
            work = visible_work(session, work_id, user)
            if work.user_id == user.user_id:
                raise Forbidden("You cannot report your own work.", code="OWN_WORK")
            report = WorkReport(work_id=work.id, reporter_id=user.user_id, reason=reason, status="open",
                                created_at=utcnow())
            try:
                with session.begin_nested():
                    session.add(report)
                    session.flush()
            except IntegrityError:
                raise Conflict("You have already reported this work.", code="ALREADY_REPORTED") from None
            return filed_report_json(report)
