"""Moderation by administrators: hide and restore works (the owner is told why), feature
them, and work through user reports."""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from shared.db import isoformat, utcnow
from shared.errors import NotFound
from shared.tokens import Claims

from .models import Work, WorkReport
from .notifications import notify
from .service import Gallery, apply_changes, dump_detail, visible_work


def hide_work(gallery: Gallery, admin: Claims, work_id: int, reason: str) -> dict[str, Any]:
    with gallery.db.transaction() as session:
        work = visible_work(session, work_id, admin, lock=True)
        work.hidden_reason, work.hidden_at = reason, utcnow()
        apply_changes(session, work, {"is_hidden": True})
        notify(gallery, session, work.user_id, "work.hidden", f"“{work.title}” was hidden by a moderator",
               reason, {"workId": work.id, "reason": reason})
        _resolve_reports(session, work.id, admin)
        session.flush()
        return dump_detail(gallery, session, work, admin)


def restore_work(gallery: Gallery, admin: Claims, work_id: int) -> dict[str, Any]:
    with gallery.db.transaction() as session:
        work = visible_work(session, work_id, admin, lock=True)
        if work.is_hidden:
            work.hidden_reason, work.hidden_at = None, None
            apply_changes(session, work, {"is_hidden": False})
            notify(gallery, session, work.user_id, "work.restored", f"“{work.title}” is visible again",
                   data={"workId": work.id})
        session.flush()
        return dump_detail(gallery, session, work, admin)


def set_featured(gallery: Gallery, admin: Claims, work_id: int, featured: bool) -> dict[str, Any]:
    with gallery.db.transaction() as session:
        work = visible_work(session, work_id, admin, lock=True)
        if featured and work.featured_at is None:
            work.featured_at = utcnow()
            notify(gallery, session, work.user_id, "work.featured", f"“{work.title}” was featured",
                   data={"workId": work.id}, dedupe_key=f"featured:{work.id}")
        elif not featured:
            work.featured_at = None
        session.flush()
        return dump_detail(gallery, session, work, admin)


def _resolve_reports(session, work_id: int, admin: Claims) -> None:
    for report in session.scalars(select(WorkReport).where(WorkReport.work_id == work_id,
                                                           WorkReport.status == "open")):
        report.status, report.resolved_at, report.resolved_by = "resolved", utcnow(), admin.user_id


def resolve_report(gallery: Gallery, admin: Claims, report_id: int) -> dict[str, Any]:
    with gallery.db.transaction() as session:
        report = session.get(WorkReport, report_id) if 1 <= report_id < 2**31 else None
        if report is None:
            raise NotFound("This report does not exist.", code="REPORT_NOT_FOUND")
        if report.status == "open":
            report.status, report.resolved_at, report.resolved_by = "resolved", utcnow(), admin.user_id
        return _dump_report(report, None)


def _dump_report(report: WorkReport, work: Work | None) -> dict[str, Any]:
    summary = None if work is None else {"id": work.id, "title": work.title, "userId": work.user_id,
                                         "hidden": work.is_hidden, "isPublic": work.is_public}
    return {"id": report.id, "workId": report.work_id, "reporterId": report.reporter_id, "reason": report.reason,
            "status": report.status, "createdAt": isoformat(report.created_at),
            "resolvedAt": isoformat(report.resolved_at), "resolvedBy": report.resolved_by, "work": summary}


def list_reports(gallery: Gallery, query: dict[str, Any]) -> dict[str, Any]:
    conditions = [] if query["status"] == "all" else [WorkReport.status == query["status"]]
    page, size = query["page"], query["page_size"]
    with gallery.db.read() as session:
        total = session.scalar(select(func.count()).select_from(WorkReport).where(*conditions))
        reports = list(session.scalars(select(WorkReport).where(*conditions).order_by(WorkReport.id.desc())
                                       .offset((page - 1) * size).limit(size)))
        works = {w.id: w for w in session.scalars(select(Work).where(Work.id.in_({r.work_id for r in reports})))}
    return {"items": [_dump_report(r, works.get(r.work_id)) for r in reports], "page": page, "pageSize": size,
            "total": total}
