"""Routes of the safety service (administrators, through the gateway's ``/api/admin/safety``):
the term list, a trial match, the audit log and its CSV export; and the internal list the
content filters load when Redis holds none."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, stream_with_context

from shared.errors import ok
from shared.openapi import doc, spec_response
from shared.tokens import require_admin
from shared.web import load_json, load_query
from services.safety.audit import AuditLog
from services.safety.categories import CATEGORIES, SEVERITIES
from services.safety.client import ContentFilter
from services.safety.schemas import AuditQuerySchema, CheckSchema, TermBulkSchema, TermQuerySchema, TermSchema, TermUpdateSchema
from services.safety.service import TermList

bp = Blueprint("safety", __name__)


def _terms() -> TermList:
    return current_app.extensions["safety_terms"]


def _audit() -> AuditLog:
    return current_app.extensions["safety_audit"]


@bp.get("/api/admin/safety/categories")
@doc("The categories a term may belong to, with their zh-CN and en names", auth="admin")
def list_categories():
    require_admin()
    return ok({"items": [{"key": key, "names": names} for key, names in CATEGORIES.items()],
               "severities": list(SEVERITIES)})


@bp.get("/api/admin/safety/terms")
@doc("The term list (search by text, filter by category, severity, kind)", auth="admin", query=TermQuerySchema)
def list_terms():
    require_admin()
    return ok(_terms().list_terms(load_query(TermQuerySchema())))


@bp.post("/api/admin/safety/terms")
@doc("Add a term or a pattern (audited; every process picks the change up within SAFETY_REFRESH_SECONDS)",
     auth="admin", body=TermSchema, status=201,
     errors={409: "TERM_EXISTS, TOO_MANY_TERMS", 422: "INVALID_PATTERN, UNSAFE_PATTERN, EMPTY_TERM"})
def create_term():
    admin = require_admin()
    return ok({"term": _terms().create(admin, load_json(TermSchema()))}, 201)


@bp.post("/api/admin/safety/terms/bulk")
@doc("Import up to 10,000 entries at once; those already listed are skipped (audited)", auth="admin",
     body=TermBulkSchema, errors={409: "TOO_MANY_TERMS", 422: "INVALID_PATTERN, UNSAFE_PATTERN, EMPTY_TERM"})
def import_terms():
    admin = require_admin()
    return ok(_terms().bulk(admin, load_json(TermBulkSchema())))


@bp.put("/api/admin/safety/terms/<id:term_id>")
@doc("Change a term (audited, with the values before and after)", auth="admin", body=TermUpdateSchema,
     errors={404: "TERM_NOT_FOUND", 409: "TERM_EXISTS", 422: "INVALID_PATTERN, UNSAFE_PATTERN, EMPTY_TERM"})
def update_term(term_id: int):
    admin = require_admin()
    changes = load_json(TermUpdateSchema())
    return ok({"term": _terms().update(admin, term_id, changes)})


@bp.delete("/api/admin/safety/terms/<id:term_id>")
@doc("Remove a term (audited)", auth="admin", errors={404: "TERM_NOT_FOUND"})
def delete_term(term_id: int):
    admin = require_admin()
    return ok(_terms().delete(admin, term_id))


@bp.post("/api/admin/safety/check")
@doc("Try a text against the current list: which entries it matches (nothing is recorded)", auth="admin",
     body=CheckSchema)
def check_text():
    require_admin()
    text = load_json(CheckSchema())["text"]
    content_filter: ContentFilter = current_app.extensions["safety_filter"]
    hits = content_filter.matcher().hits(text)
    return ok({"hits": [{"termId": h.term_id, "category": h.category, "severity": h.severity} for h in hits],
               "version": content_filter.matcher().version})


@bp.get("/api/admin/safety/audit")
@doc("The audit log: blocks, flags, review decisions and list changes, newest first", auth="admin",
     query=AuditQuerySchema,
     description="A withheld output's row names the image kept for moderators (`mediaKey`, under `quarantine/`) "
                 "and answers `mediaUrl`, a signed link valid for 5 to 10 minutes.")
def search_audit():
    require_admin()
    return ok(_audit().search(load_query(AuditQuerySchema())))


@bp.get("/api/admin/safety/audit/export")
@doc("The audit log's matching rows as CSV (UTF-8 with BOM), oldest first", auth="admin", query=AuditQuerySchema,
     content_type="text/csv")
def export_audit():
    require_admin()
    query = load_query(AuditQuerySchema())
    query.update(page=1, page_size=1)
    return Response(stream_with_context(_audit().export_csv(query)), mimetype="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="safety-audit.csv"'})


@bp.get("/internal/terms")
@doc("The whole term list with its version (for content filters when Redis holds none; publishes it there again)")
def internal_terms():
    return ok(_terms().republished_snapshot())


@bp.get("/openapi.json")
@doc("This service's OpenAPI description")
def openapi_spec():
    return spec_response("AIGC platform: safety")
