"""Moderation by administrators: list every work (public, private, hidden), hide and restore
works (the owner is told why), feature them, work through user reports, and decide on works
waiting for publishing review (approve, or reject with a reason; one or many at once)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, false, func, select, true
from sqlalchemy.orm import Session, load_only

from shared.db import Database, after_commit, utcnow
from shared.errors import NotFound
from shared.tokens import Claims
from services.gallery.listing import LIST_COLUMNS, search_conditions
from services.gallery.models import Work, WorkReport
from services.gallery.notifications import Notifications
from services.gallery.review import ReviewPolicy
from services.gallery.rules import apply_changes, derive_listed, is_liked, visible_work
from services.gallery.schemas import WorkPresenter, report_json
from services.gateway.client import EdgeCacheClient
from services.safety.client import record


def _resolve_reports(session: Session, work_id: int, admin: Claims) -> None:
    for report in session.scalars(select(WorkReport).where(WorkReport.work_id == work_id,
                                                           WorkReport.status == "open")):
        report.status, report.resolved_at, report.resolved_by = "resolved", utcnow(), admin.user_id


class Moderation:
    def __init__(self, db: Database, presenter: WorkPresenter, notifications: Notifications,
                 edge_cache: EdgeCacheClient, review: ReviewPolicy) -> None:
        self.db = db
        self.review = review
        self.presenter = presenter
        self.notifications = notifications
        self.edge_cache = edge_cache

    def list_works(self, query: dict[str, Any]) -> dict[str, Any]:
        """Every work matching the search, newest first: all, the public, the private or the
        hidden ones, in numbered pages with a total."""
        conditions: list[ColumnElement[bool]] = search_conditions(query["search"])
        status = query["status"]
        if status == "hidden":
            conditions.append(Work.is_hidden == true())
        elif status in ("public", "private"):
            conditions += [Work.is_hidden == false(), Work.is_public == (true() if status == "public" else false())]
        page, size = query["page"], query["page_size"]
        with self.db.read() as session:
            total = session.scalar(select(func.count()).select_from(Work).where(*conditions))
            works = list(session.scalars(select(Work).options(load_only(*LIST_COLUMNS)).where(*conditions)
                                         .order_by(Work.created_at.desc(), Work.id.desc())
                                         .offset((page - 1) * size).limit(size)))
        return {"items": self.presenter.moderated_items(works), "page": page, "pageSize": size, "total": total}

    def _detail(self, session: Session, work: Work, admin: Claims) -> dict[str, Any]:
        return self.presenter.detail(work, admin, is_liked(session, work.id, admin.user_id))

    def hide_work(self, admin: Claims, work_id: int, reason: str) -> dict[str, Any]:
        with self.db.transaction() as session:
            work = visible_work(session, work_id, admin, lock=True)
            work.hidden_reason, work.hidden_at = reason, utcnow()
            apply_changes(session, work, {"is_hidden": True})
            self.notifications.notify(session, work.user_id, "work.hidden",
                                      f"“{work.title}” was hidden by a moderator", reason,
                                      {"workId": work.id, "reason": reason})
            _resolve_reports(session, work.id, admin)
            self.edge_cache.changed_after_commit(session)
            session.flush()
            return self._detail(session, work, admin)

    def restore_work(self, admin: Claims, work_id: int) -> dict[str, Any]:
        with self.db.transaction() as session:
            work = visible_work(session, work_id, admin, lock=True)
            if work.is_hidden:
                work.hidden_reason, work.hidden_at = None, None
                apply_changes(session, work, {"is_hidden": False})
                self.notifications.notify(session, work.user_id, "work.restored",
                                          f"“{work.title}” is visible again", data={"workId": work.id})
                self.edge_cache.changed_after_commit(session)
            session.flush()
            return self._detail(session, work, admin)

    def set_featured(self, admin: Claims, work_id: int, featured: bool) -> dict[str, Any]:
        with self.db.transaction() as session:
            work = visible_work(session, work_id, admin, lock=True)
            if featured and work.featured_at is None:
                work.featured_at = utcnow()
                self.notifications.notify(session, work.user_id, "work.featured", f"“{work.title}” was featured",
                                          data={"workId": work.id}, dedupe_key=f"featured:{work.id}")
            elif not featured:
                work.featured_at = None
            self.edge_cache.changed_after_commit(session)
            session.flush()
            return self._detail(session, work, admin)

    def resolve_report(self, admin: Claims, report_id: int) -> dict[str, Any]:
        with self.db.transaction() as session:
            report = session.get(WorkReport, report_id) if 1 <= report_id < 2**31 else None
            if report is None:
                raise NotFound("This report does not exist.", code="REPORT_NOT_FOUND")
            if report.status == "open":
                report.status, report.resolved_at, report.resolved_by = "resolved", utcnow(), admin.user_id
            return report_json(report, None)

    def list_reports(self, query: dict[str, Any]) -> dict[str, Any]:
        conditions = [] if query["status"] == "all" else [WorkReport.status == query["status"]]
        page, size = query["page"], query["page_size"]
        with self.db.read() as session:
            total = session.scalar(select(func.count()).select_from(WorkReport).where(*conditions))
            reports = list(session.scalars(select(WorkReport).where(*conditions).order_by(WorkReport.id.desc())
                                           .offset((page - 1) * size).limit(size)))
            works = {w.id: w for w in session.scalars(select(Work).where(Work.id.in_({r.work_id for r in reports})))}
        thumbnails = {work_id: self.presenter.files.urls(work)[1] for work_id, work in works.items()}
        return {"items": [report_json(r, works.get(r.work_id), thumbnails.get(r.work_id)) for r in reports],
                "page": page, "pageSize": size, "total": total}

    # Publishing review

    def review_queue(self, query: dict[str, Any]) -> dict[str, Any]:
        """Works in one review state (``pending`` by default), oldest first: the moderators' queue."""
        conditions = [Work.review_state == query["state"], *search_conditions(query["search"])]
        page, size = query["page"], query["page_size"]
        with self.db.read() as session:
            total = session.scalar(select(func.count()).select_from(Work).where(*conditions))
            works = list(session.scalars(select(Work).options(load_only(*LIST_COLUMNS)).where(*conditions)
                                         .order_by(Work.created_at, Work.id)
                                         .offset((page - 1) * size).limit(size)))
        return {"items": self.presenter.moderated_items(works), "page": page, "pageSize": size, "total": total,
                "mode": self.review.mode}

    def decide(self, admin: Claims, data: dict[str, Any]) -> dict[str, Any]:
        """Approve or reject (with a reason) works waiting for review: all or nothing. The
        authors are told, the edge cache moves on, and each decision is audited."""
        ids, action, reason = sorted(set(data["ids"])), data["action"], data.get("reason") or None
        with self.db.transaction() as session:
            works = list(session.scalars(select(Work).where(Work.id.in_(ids)).order_by(Work.id).with_for_update()))
            missing = sorted(set(ids) - {work.id for work in works})
            if missing:
                raise NotFound("Some of these works do not exist.", code="WORK_NOT_FOUND", details={"missing": missing})
            now = utcnow()
            decisions = []
            for work in works:
                work.review_state = "approved" if action == "approve" else "rejected"
                work.review_reason = reason if action == "reject" else None
                work.reviewed_by, work.reviewed_at = admin.user_id, now
                derive_listed(work)
                if action == "approve":
                    self.notifications.notify(session, work.user_id, "work.approved",
                                              f"“{work.title}” passed review", data={"workId": work.id})
                else:
                    self.notifications.notify(session, work.user_id, "work.rejected",
                                              f"“{work.title}” did not pass review", reason,
                                              {"workId": work.id, "reason": reason})
                decisions.append((work.id, work.title, list(work.review_categories or [])))
            self.edge_cache.changed_after_commit(session)
            after_commit(session, lambda: self._audit(admin, action, reason, decisions))
        return {"action": action, "ids": ids}

    def _audit(self, admin: Claims, action: str, reason: str | None,
               decisions: list[tuple[int, str, list[str]]]) -> None:
        for work_id, title, categories in decisions:
            record(self.review.filter.redis, f"review_{'approved' if action == 'approve' else 'rejected'}",
                   "gallery.review", actor_id=admin.user_id, actor_name=admin.username,
                   category=categories[0] if categories else None, subject=f"work:{work_id}", excerpt=title,
                   detail={"reason": reason, "categories": categories})
