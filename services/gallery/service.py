"""The gallery's domain entry point: saving render outputs as works, editing, deleting and
erasing them (``WorksService``), and the set of objects the routes call (``GalleryServices``).

Every write is one transaction. A work's files are copied before its row is written and
removed after commit once no work references them (see ``files.py``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db import Database, utcnow
from shared.errors import Conflict, Forbidden, NotFound
from shared.tokens import Claims
from services.gallery.authors import AuthorDirectory
from services.gallery.engagement import Engagement
from services.gallery.files import WorkFiles
from services.gallery.labels import WorkLabels
from services.gallery.liked import LikedSets
from services.gallery.listing import WorkListing
from services.gallery.models import Notification, Work, WorkHit, WorkLike, WorkReport, WorkTag, WorkTerm
from services.gallery.moderation import Moderation
from services.gallery.notifications import Notifications
from services.gallery.review import TEXT_FIELDS, ReviewPolicy
from services.gallery.rules import (KEEP_UPDATED_AT, apply_changes, derive_listed, hot_score, is_liked, owned_work,
                                    set_tags, visible_work)
from services.gallery.search import search_text, set_terms
from services.gallery.schemas import WorkPresenter
from services.gateway.client import EdgeCacheClient
from services.render.client import OutputRecord, RenderClient

log = logging.getLogger(__name__)


def _already_saved(session: Session, output_id: str) -> Conflict:
    work_id = session.scalar(select(Work.id).where(Work.output_id == output_id))
    return Conflict("This output is already saved as a work.", code="ALREADY_SAVED",
                    details={"workId": work_id})


def _new_work(user: Claims, output: OutputRecord, keys: tuple[str, str], title: str,
              data: dict[str, Any], is_public: bool, now: datetime) -> Work:
    tags = data.get("tags", [])
    description = data.get("description", "")
    prompt = str(output.params.get("prompt") or "")
    return Work(
        user_id=user.user_id, author_username=user.username, output_id=output.id, job_id=output.job_id,
        title=title, description=description, tags=tags, is_public=is_public, listed=is_public,
        is_hidden=False, review_state="none", image_key=keys[0], thumbnail_key=keys[1], width=output.width, height=output.height,
        file_size=output.file_size, sha256=output.sha256, workflow=output.workflow,
        workflow_version=output.workflow_version, model=str(output.params.get("model") or "")[:128],
        source_work_id=output.source_work_id, graph=output.graph, params=output.params, prompt=prompt,
        search_text=search_text(title, description, prompt, tags), likes_count=0, views_count=0,
        downloads_count=0, hot_score=hot_score(0, now), created_at=now, updated_at=now)


def _own_output(output: OutputRecord, user: Claims) -> None:
    if output.user_id != user.user_id:
        raise Forbidden("This output belongs to someone else.", code="NOT_YOUR_OUTPUT")


def _remove_work_rows(session: Session, work_ids: list[int], liked_sets: LikedSets) -> None:
    """Delete works and everything hanging off them (flushes, does not commit); once committed,
    the works leave their likers' sets (a later work may get a deleted one's id on SQLite)."""
    if not work_ids:
        return
    likers: dict[int, list[int]] = {}
    for user_id, work_id in session.execute(select(WorkLike.user_id, WorkLike.work_id)
                                            .where(WorkLike.work_id.in_(work_ids))):
        likers.setdefault(user_id, []).append(work_id)
    for user_id, liked in likers.items():
        liked_sets.changed_after_commit(session, user_id, liked, False)
    for model in (WorkLike, WorkTag, WorkTerm, WorkHit, WorkReport):
        session.execute(delete(model).where(model.work_id.in_(work_ids)))
    session.execute(delete(Work).where(Work.id.in_(work_ids)).execution_options(synchronize_session=False))


class WorksService:
    def __init__(self, db: Database, outputs: RenderClient, files: WorkFiles, authors: AuthorDirectory,
                 presenter: WorkPresenter, edge_cache: EdgeCacheClient, review: ReviewPolicy,
                 liked_sets: LikedSets) -> None:
        self.db = db
        self.liked_sets = liked_sets
        self.review = review
        self.outputs = outputs
        self.files = files
        self.authors = authors
        self.presenter = presenter
        self.edge_cache = edge_cache

    def _detail(self, session: Session, work: Work, viewer: Claims | None) -> dict[str, Any]:
        return self.presenter.detail(work, viewer, is_liked(session, work.id, viewer.user_id if viewer else None))

    # Saving

    def _default_public(self, user: Claims) -> bool:
        """The author's privacy choice for new works (auth's ``newWorksPublic``); private when unknown."""
        try:
            entry = self.authors.fetch(user.user_id)
        except Exception as exc:  # any failure of the lookup must fall back to the safe choice
            log.warning("privacy setting of user %s unreadable (%s); saving as private", user.user_id,
                        exc.__class__.__name__)
            return False
        if entry is None:
            return False
        return bool(entry.get("newWorksPublic", True))

    def _check_new(self, user: Claims, data: dict[str, Any], title: str) -> list[str]:
        """The new works' text against the term list (CONTENT_REJECTED on a block); flagged categories."""
        return self.review.check_text(user, {**data, "title": title}, "work:new")

    def _insert_works(self, user: Claims, rows: list[tuple[OutputRecord, str, tuple[str, str]]],
                      data: dict[str, Any], is_public: bool, flags: list[str]) -> list[dict[str, Any]]:
        with self.db.transaction() as session:
            now = utcnow()
            works = []
            for output, title, keys in rows:
                work = _new_work(user, output, keys, title, data, is_public, now)
                self.review.settle(work, flags, text_changed=True, published=is_public)
                derive_listed(work)
                try:
                    with session.begin_nested():
                        session.add(work)
                        session.flush()
                except IntegrityError:
                    raise _already_saved(session, output.id) from None
                set_tags(session, work.id, work.tags)
                set_terms(session, work)
                works.append(work)
            if is_public:
                self.edge_cache.changed_after_commit(session)
            session.flush()
            details = [self._detail(session, work, user) for work in works]
            for work in works:  # a deleted work's id may come back (SQLite): its counters must not
                self.edge_cache.set_counters(work.id, likes=0, views=0, downloads=0)
            return details

    def save_work(self, user: Claims, data: dict[str, Any]) -> dict[str, Any]:
        """Save one of the caller's render outputs as a work (one work per output)."""
        output = self.outputs.output(data["output_id"])
        _own_output(output, user)
        flags = self._check_new(user, data, data["title"])
        with self.db.read() as session:
            if session.scalar(select(Work.id).where(Work.output_id == output.id)) is not None:
                raise _already_saved(session, output.id)
        is_public = data["is_public"] if "is_public" in data else self._default_public(user)
        keys = self.files.copy_from(output)
        [work] = self._insert_works(user, [(output, data["title"], keys)], data, is_public, flags)
        self.files.ensure_copied([output])
        return work

    def save_job(self, user: Claims, data: dict[str, Any]) -> dict[str, Any]:
        """Save every not-yet-saved output of one of the caller's jobs, titled "<title> #n"."""
        outputs = self.outputs.job_outputs(data["job_id"])
        if not outputs:
            raise NotFound("This job has no outputs to save.", code="JOB_HAS_NO_OUTPUTS")
        for output in outputs:
            _own_output(output, user)
        flags = self._check_new(user, data, data["title"])
        with self.db.read() as session:
            saved = set(session.scalars(select(Work.output_id)
                                        .where(Work.output_id.in_([o.id for o in outputs]))))
        pending = [output for output in outputs if output.id not in saved]
        is_public = data["is_public"] if "is_public" in data else self._default_public(user)
        rows = []
        for output in pending:
            title = data["title"] if len(outputs) == 1 else f"{data['title'][:94]} #{output.index + 1}"
            rows.append((output, title, self.files.copy_from(output)))
        works = self._insert_works(user, rows, data, is_public, flags) if rows else []
        self.files.ensure_copied(pending)
        return {"works": works, "skipped": sorted(saved)}

    # Reading, editing and deleting

    def get_work(self, viewer: Claims | None, work_id: int) -> dict[str, Any]:
        """One work; reading never counts a view."""
        with self.db.read() as session:
            return self._detail(session, visible_work(session, work_id, viewer), viewer)

    def remix(self, viewer: Claims | None, work_id: int) -> dict[str, Any]:
        """The settings to pre-fill the create page; a job made from them passes ``sourceWorkId``."""
        with self.db.read() as session:
            work = visible_work(session, work_id, viewer)
            return {"sourceWorkId": work.id, "workflow": work.workflow, "workflowVersion": work.workflow_version,
                    "params": dict(work.params or {})}

    def update_work(self, user: Claims, work_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        flags = self.review.check_text(user, changes, f"work:{work_id}")
        with self.db.transaction() as session:
            work = owned_work(session, work_id, user)
            was_public = work.is_public
            apply_changes(session, work, changes)
            self.review.settle(work, flags, text_changed=bool(changes.keys() & set(TEXT_FIELDS)),
                               published=work.is_public and not was_public)
            derive_listed(work)
            self.edge_cache.changed_after_commit(session)
            session.flush()
            return self._detail(session, work, user)

    def delete_work(self, user: Claims, work_id: int) -> dict[str, Any]:
        with self.db.transaction() as session:
            work = owned_work(session, work_id, user)
            keys = [work.image_key, work.thumbnail_key]
            _remove_work_rows(session, [work.id], self.liked_sets)
            self.files.remove_after_commit(session, keys)
            self.edge_cache.changed_after_commit(session)
        return {"deleted": True}

    def batch_update(self, user: Claims, data: dict[str, Any]) -> dict[str, Any]:
        """Publish, unpublish, tag or delete several of the caller's works: all or nothing."""
        ids = data["ids"]
        with self.db.transaction() as session:
            works = list(session.scalars(select(Work).where(Work.id.in_(ids), Work.user_id == user.user_id)
                                         .order_by(Work.id).with_for_update()))
            missing = sorted(set(ids) - {work.id for work in works})
            if missing:
                raise NotFound("Some of these works do not exist or are not yours.", code="WORK_NOT_FOUND",
                               details={"missing": missing})
            action = data["action"]
            flags = self.review.check_text(user, {"tags": data["tags"]}, "works:batch") if action == "tag" else []
            self.edge_cache.changed_after_commit(session)
            if action == "delete":
                keys = [key for work in works for key in (work.image_key, work.thumbnail_key)]
                _remove_work_rows(session, ids, self.liked_sets)
                self.files.remove_after_commit(session, keys)
            for work in works if action != "delete" else []:
                if action == "tag":
                    tags = list(dict.fromkeys([*(work.tags or []), *data["tags"]]))
                    if len(tags) > 10:
                        raise Conflict("A work may have at most 10 tags.", code="TOO_MANY_TAGS",
                                       details={"workId": work.id})
                    apply_changes(session, work, {"tags": tags})
                    self.review.settle(work, flags, text_changed=True, published=False)
                else:
                    was_public = work.is_public
                    apply_changes(session, work, {"is_public": action == "publish"})
                    self.review.settle(work, [], text_changed=False, published=work.is_public and not was_public)
                derive_listed(work)
        return {"action": action, "ids": sorted(ids)}

    def remove_user(self, user_id: int) -> dict[str, int]:
        """Erase a deleted account: its works (and their files), likes, views, reports and notifications."""
        with self.db.transaction() as session:
            works = session.execute(select(Work.id, Work.image_key, Work.thumbnail_key)
                                    .where(Work.user_id == user_id)).all()
            liked = list(session.scalars(select(WorkLike.work_id).where(WorkLike.user_id == user_id)))
            counts = []
            if liked:
                session.execute(update(Work).where(Work.id.in_(liked))
                                .values(likes_count=Work.likes_count - 1, **KEEP_UPDATED_AT)
                                .execution_options(synchronize_session=False))
                session.execute(delete(WorkLike).where(WorkLike.user_id == user_id))
                self.liked_sets.changed_after_commit(session, user_id, [], None)
                counts = session.execute(select(Work.id, Work.likes_count, Work.created_at)
                                         .where(Work.id.in_(liked))).all()
                for work_id, likes, created_at in counts:
                    session.execute(update(Work).where(Work.id == work_id)
                                    .values(hot_score=hot_score(likes, created_at), **KEEP_UPDATED_AT))
            _remove_work_rows(session, [row.id for row in works], self.liked_sets)
            session.execute(delete(WorkHit).where(WorkHit.viewer == f"u:{user_id}"))
            session.execute(delete(WorkReport).where(WorkReport.reporter_id == user_id))
            session.execute(delete(Notification).where(Notification.user_id == user_id))
            self.files.remove_after_commit(session, [key for row in works for key in row[1:]])
            self.edge_cache.changed_after_commit(session)
            for work_id, likes, _created_at in counts:
                self.edge_cache.set_counters(work_id, likes=likes)
        return {"works": len(works), "likes": len(liked)}


@dataclass(frozen=True)
class GalleryServices:
    """The objects the routes call (``app.extensions["gallery"]``), built once by create_app."""

    works: WorksService
    listing: WorkListing
    engagement: Engagement
    moderation: Moderation
    notifications: Notifications
    files: WorkFiles
    labels: WorkLabels
