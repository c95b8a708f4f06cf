"""Moderation by administrators: list every work (public, private, hidden), hide and restore
works (the owner is told why), feature them, and work through user reports."""
from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, false, func, select, true
from sqlalchemy.orm import Session, load_only

from shared.db import Database, utcnow
from shared.errors import NotFound
from shared.tokens import Claims
from services.gallery.listing import LIST_COLUMNS, search_conditions
from services.gallery.models import Work, WorkReport
from services.gallery.notifications import Notifications
from services.gallery.rules import apply_changes, is_liked, visible_work
from services.gallery.schemas import WorkPresenter, report_json
from services.gateway.client import EdgeCacheClient


def _resolve_reports(session: Session, work_id: int, admin: Claims) -> None:
    for report in session.scalars(select(WorkReport).where(WorkReport.work_id == work_id,
                                                           WorkReport.status == "open")):
        report.status, report.resolved_at, report.resolved_by = "resolved", utcnow(), admin.user_id


class Moderation:
    def __init__(self, db: Database, presenter: WorkPresenter, notifications: Notifications,
                 edge_cache: EdgeCacheClient) -> None:
        self.db = db
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
        return {"items": [report_json(r, works.get(r.work_id)) for r in reports], "page": page, "pageSize": size,
                "total": total}
