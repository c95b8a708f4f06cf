"""HTTP routes of the gallery: ``/api/works`` (works, gallery, engagement),
``/api/admin/works`` (moderation), ``/api/notifications``, and ``/internal`` (service token,
for the gateway, auth, credits and the render worker)."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from shared.errors import BadRequest, ok
from shared.openapi import doc, spec_response
from shared.tokens import optional_user, require_admin, require_user
from shared.web import load_json, load_query
from services.gallery.engagement import Visitor
from services.gallery.labels import VERIFY_MAX_BYTES, PayloadTooLarge
from services.gallery.schemas import (AdminWorksQuerySchema, BatchSchema, GalleryQuerySchema, HideSchema,
                                      InternalNotificationSchema, LikedQuerySchema, MediaKeysSchema,
                                      MyWorksQuerySchema, NotificationsQuerySchema, ReportSchema,
                                      ReportsQuerySchema, ReviewDecisionSchema, ReviewQueueQuerySchema, SaveJobSchema,
                                      SaveWorkSchema, UpdateWorkSchema)
from services.gallery.service import GalleryServices

bp = Blueprint("gallery", __name__)


# What an API token needs: reading works (the caller's, the gallery, downloads) or changing them.
READ, WRITE = "works:read", "works:write"


def _gallery() -> GalleryServices:
    return current_app.extensions["gallery"]


def _visitor() -> Visitor:
    """The caller; the gateway puts the direct client address in X-Real-IP."""
    forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
    address = request.headers.get("X-Real-IP") or forwarded or request.remote_addr or ""
    return Visitor(optional_user(scope=READ), address, request.headers.get("User-Agent", "")[:512])


# Works

@bp.post("/api/works/save")
@doc("Save one of the caller's render outputs as a work", auth="user", scope=WRITE, body=SaveWorkSchema, status=201,
     errors={403: "NOT_YOUR_OUTPUT", 404: "OUTPUT_NOT_FOUND", 409: "ALREADY_SAVED", 422: "CONTENT_REJECTED",
             503: "GATEWAY_UNAVAILABLE"},
     description="A public work matching the term list, or any under GALLERY_REVIEW_MODE all, is saved with "
                 "reviewState pending and listed only once a moderator approves it.")
def save_work():
    user = require_user(scope=WRITE)
    return ok({"work": _gallery().works.save_work(user, load_json(SaveWorkSchema()))}, 201)


@bp.post("/api/works/save-job")
@doc("Save every output of one of the caller's jobs as works", auth="user", scope=WRITE, body=SaveJobSchema, status=201,
     errors={403: "NOT_YOUR_OUTPUT", 404: "JOB_NOT_FOUND", 409: "JOB_HAS_NO_OUTPUTS", 422: "CONTENT_REJECTED",
             503: "GATEWAY_UNAVAILABLE"})
def save_job():
    user = require_user(scope=WRITE)
    return ok(_gallery().works.save_job(user, load_json(SaveJobSchema())), 201)


@bp.post("/api/works/batch")
@doc("Publish, hide, tag or delete several of the caller's works", auth="user", scope=WRITE, body=BatchSchema,
     errors={404: "WORK_NOT_FOUND (one is missing or not the caller's)", 422: "CONTENT_REJECTED"})
def batch():
    user = require_user(scope=WRITE)
    return ok(_gallery().works.batch_update(user, load_json(BatchSchema())))


EDGE_CACHED = ("Served through the gateway's edge cache: anonymous answers carry an ETag (If-None-Match gets "
               "304) and Cache-Control; likes, views and downloads may lag by up to EDGE_CACHE_SECONDS (5 s), "
               "while publishing, edits, hiding, deleting and featuring show at once. Signed in, isLiked is the "
               "caller's own, current.")
EDGE_CACHED_DETAIL = ("Served through the gateway's edge cache: anonymous answers carry an ETag (If-None-Match gets "
                      "304) and Cache-Control (max-age EDGE_CACHE_SECONDS); likes, views and downloads show at once "
                      "(if Redis missed a count, within about twice EDGE_DETAIL_SECONDS, 60 s), and so do publishing, "
                      "edits, hiding, deleting, featuring and review decisions. Signed in, isLiked is the caller's "
                      "own, current.")


@bp.get("/api/works/gallery")
@doc("The public gallery (search, filters, sort, cursor pages)", auth="optional", scope=READ,
     query=GalleryQuerySchema, errors={400: "INVALID_CURSOR"},
     description="A search matches every word (a word as the start of a word, Chinese by its characters), "
                 "title and tag matches first. " + EDGE_CACHED)
def list_gallery():
    viewer = optional_user(scope=READ)
    return ok(_gallery().listing.list_gallery(viewer, load_query(GalleryQuerySchema())))


@bp.get("/api/works/my")
@doc("The caller's works", auth="user", scope=READ, query=MyWorksQuerySchema, errors={400: "INVALID_CURSOR"})
def list_my_works():
    user = require_user(scope=READ)
    return ok(_gallery().listing.list_my_works(user, load_query(MyWorksQuerySchema())))


@bp.get("/api/works/stats")
@doc("The caller's work statistics", auth="user", scope=READ)
def my_stats():
    return ok(_gallery().listing.my_stats(require_user(scope=READ)))


@bp.get("/api/works/<id:work_id>")
@doc("One work (a private or hidden one only for its author or an admin)", auth="optional", scope=READ,
     errors={404: "WORK_NOT_FOUND"}, description=EDGE_CACHED_DETAIL)
def get_work(work_id: int):
    return ok({"work": _gallery().works.get_work(optional_user(scope=READ), work_id)})


@bp.put("/api/works/<id:work_id>")
@doc("Edit a work's title, description, tags or visibility", auth="user", scope=WRITE, body=UpdateWorkSchema,
     errors={403: "NOT_YOUR_WORK", 404: "WORK_NOT_FOUND", 422: "CONTENT_REJECTED"})
def update_work(work_id: int):
    user = require_user(scope=WRITE)
    changes = load_json(UpdateWorkSchema())
    return ok({"work": _gallery().works.update_work(user, work_id, changes)})


@bp.delete("/api/works/<id:work_id>")
@doc("Delete a work", auth="user", scope=WRITE, errors={403: "NOT_YOUR_WORK", 404: "WORK_NOT_FOUND"})
def delete_work(work_id: int):
    return ok(_gallery().works.delete_work(require_user(scope=WRITE), work_id))


@bp.get("/api/works/<id:work_id>/remix")
@doc("The parameters to generate a work again", auth="optional", scope=READ, errors={404: "WORK_NOT_FOUND"})
def remix(work_id: int):
    return ok(_gallery().works.remix(optional_user(scope=READ), work_id))


# Engagement

@bp.put("/api/works/<id:work_id>/like")
@doc("Like a work (idempotent)", auth="user", errors={404: "WORK_NOT_FOUND"})
def like_work(work_id: int):
    return ok(_gallery().engagement.like_work(require_user(), work_id))


@bp.delete("/api/works/<id:work_id>/like")
@doc("Take a like back (idempotent)", auth="user", errors={404: "WORK_NOT_FOUND"})
def unlike_work(work_id: int):
    return ok(_gallery().engagement.unlike_work(require_user(), work_id))


@bp.post("/api/works/<id:work_id>/like")
@doc("Toggle the caller's like", auth="user", errors={404: "WORK_NOT_FOUND"})
def toggle_like(work_id: int):
    return ok(_gallery().engagement.toggle_like(require_user(), work_id))


@bp.post("/api/works/<id:work_id>/view")
@doc("Count a view (once per visitor and window)", auth="optional", scope=READ, errors={404: "WORK_NOT_FOUND"})
def record_view(work_id: int):
    return ok(_gallery().engagement.record_view(_visitor(), work_id))


@bp.get("/api/works/<id:work_id>/download")
@doc("Download a work's image (counted)", auth="optional", scope=READ, content_type="image/png",
     errors={404: "WORK_NOT_FOUND", 503: "STORAGE_UNAVAILABLE"})
def download(work_id: int):
    file = _gallery().engagement.download(_visitor(), work_id)
    return Response(file.data, mimetype=file.mimetype, headers={
        "Content-Disposition": file.content_disposition, "Cache-Control": "private, no-store"})


@bp.post("/api/works/verify-label")
@doc("Check whether an image carries the platform's AI-content label, and whose work it is", auth="optional",
     scope=READ,
     multipart={"file": "The image (PNG, JPEG or WebP; the field may also be named 'image')"},
     errors={400: "NO_FILE", 413: "PAYLOAD_TOO_LARGE", 422: "INVALID_IMAGE", 429: "RATE_LIMITED"},
     description="Reads the implicit label (GB 45438-2025 `AIGC` field in PNG text, XMP or EXIF). `labelled`: a "
                 "label is present; `ours`: its protection codes are the platform's (then `jobId`, `generatedAt` "
                 "and, for a caller who may see it, `work`). A copy re-encoded without its metadata (screenshots, "
                 "most editors and chat apps) is unlabelled. Limited per address by RATE_LIMIT_LABEL_VERIFY.")
def verify_label():
    viewer = optional_user(scope=READ)
    part = next((request.files[name] for name in ("file", "image") if name in request.files), None)
    if part is None:
        raise BadRequest("Send the image as multipart form data in the field 'file'.", code="NO_FILE")
    data = part.stream.read(VERIFY_MAX_BYTES + 1)
    if len(data) > VERIFY_MAX_BYTES:
        raise PayloadTooLarge(f"Images to check are limited to {VERIFY_MAX_BYTES} bytes.")
    return ok({"verification": _gallery().labels.verify(viewer, data)})


@bp.post("/api/works/<id:work_id>/report")
@doc("Report a work to the moderators", auth="user", body=ReportSchema, status=201,
     errors={403: "OWN_WORK", 404: "WORK_NOT_FOUND", 409: "ALREADY_REPORTED", 422: "CONTENT_REJECTED"})
def report_work(work_id: int):
    user = require_user()
    reason = load_json(ReportSchema())["reason"]
    return ok({"report": _gallery().engagement.report_work(user, work_id, reason)}, 201)


# Moderation

@bp.get("/api/admin/works")
@doc("Every work for moderation, newest first: all, public, private or hidden ones", auth="admin",
     query=AdminWorksQuerySchema)
def admin_list_works():
    require_admin()
    return ok(_gallery().moderation.list_works(load_query(AdminWorksQuerySchema())))


@bp.get("/api/admin/works/review")
@doc("The publishing review queue: works in one review state (pending by default), oldest first", auth="admin",
     query=ReviewQueueQuerySchema)
def review_queue():
    require_admin()
    return ok(_gallery().moderation.review_queue(load_query(ReviewQueueQuerySchema())))


@bp.post("/api/admin/works/review")
@doc("Approve, or reject with a reason, up to 100 works at once (all or nothing; authors are told; audited)",
     auth="admin", body=ReviewDecisionSchema, errors={404: "WORK_NOT_FOUND"})
def decide_review():
    admin = require_admin()
    return ok(_gallery().moderation.decide(admin, load_json(ReviewDecisionSchema())))


@bp.get("/api/admin/works/reports")
@doc("List reports", auth="admin", query=ReportsQuerySchema)
def list_reports():
    require_admin()
    return ok(_gallery().moderation.list_reports(load_query(ReportsQuerySchema())))


@bp.post("/api/admin/works/reports/<id:report_id>/resolve")
@doc("Resolve a report", auth="admin", errors={404: "REPORT_NOT_FOUND"})
def resolve_report(report_id: int):
    return ok({"report": _gallery().moderation.resolve_report(require_admin(), report_id)})


@bp.post("/api/admin/works/<id:work_id>/hide")
@doc("Hide a work from everyone but its author", auth="admin", body=HideSchema,
     errors={404: "WORK_NOT_FOUND"})
def hide_work(work_id: int):
    admin = require_admin()
    reason = load_json(HideSchema())["reason"]
    return ok({"work": _gallery().moderation.hide_work(admin, work_id, reason)})


@bp.post("/api/admin/works/<id:work_id>/restore")
@doc("Restore a hidden work", auth="admin", errors={404: "WORK_NOT_FOUND"})
def restore_work(work_id: int):
    return ok({"work": _gallery().moderation.restore_work(require_admin(), work_id)})


@bp.put("/api/admin/works/<id:work_id>/feature")
@doc("Feature a work", auth="admin", errors={404: "WORK_NOT_FOUND"})
def feature_work(work_id: int):
    return ok({"work": _gallery().moderation.set_featured(require_admin(), work_id, True)})


@bp.delete("/api/admin/works/<id:work_id>/feature")
@doc("Stop featuring a work", auth="admin", errors={404: "WORK_NOT_FOUND"})
def unfeature_work(work_id: int):
    return ok({"work": _gallery().moderation.set_featured(require_admin(), work_id, False)})


# Notifications

@bp.get("/api/notifications")
@doc("The caller's notifications", auth="user", query=NotificationsQuerySchema)
def list_notifications():
    user = require_user()
    return ok(_gallery().notifications.list_notifications(user, load_query(NotificationsQuerySchema())))


@bp.get("/api/notifications/unread-count")
@doc("How many of the caller's notifications are unread", auth="user")
def unread_count():
    return ok(_gallery().notifications.unread_count(require_user()))


@bp.post("/api/notifications/<id:note_id>/read")
@doc("Mark a notification read", auth="user", errors={404: "NOTIFICATION_NOT_FOUND"})
def mark_read(note_id: int):
    return ok(_gallery().notifications.mark_read(require_user(), note_id))


@bp.post("/api/notifications/read-all")
@doc("Mark all the caller's notifications read", auth="user")
def mark_all_read():
    return ok(_gallery().notifications.mark_all_read(require_user()))


@bp.delete("/api/notifications/<id:note_id>")
@doc("Delete a notification", auth="user", errors={404: "NOTIFICATION_NOT_FOUND"})
def delete_notification(note_id: int):
    return ok(_gallery().notifications.delete_notification(require_user(), note_id))


# Internal (service token only, enforced for every path by init_service_app)

@bp.post("/internal/notifications")
@doc("Create a notification for a user (idempotent by key)", body=InternalNotificationSchema, status=201,
     description="201 when created, 200 when the key was seen before.")
def create_notification():
    note, created = _gallery().notifications.create_from_service(load_json(InternalNotificationSchema()))
    return ok({"notification": note}, 201 if created else 200)


@bp.get("/internal/users/<id:user_id>/stats")
@doc("A user's public counts (works, likes received)")
def user_stats(user_id: int):
    return ok(_gallery().listing.public_profile_stats(user_id))


@bp.get("/internal/users/<id:user_id>/liked")
@doc("Which of these works a user likes (the gateway lays it over cached public pages)", query=LikedQuerySchema,
     description="Asked when the user's set of liked works in Redis is missing; rebuilds it.")
def liked_works(user_id: int):
    work_ids = load_query(LikedQuerySchema())["work_ids"]
    return ok({"workIds": _gallery().engagement.liked_among(user_id, work_ids)})


@bp.get("/internal/media/<path:key>/access")
@doc("Whether a media key belongs to a listed work (served without a signature)")
def media_access(key: str):
    return ok({"key": key, "public": _gallery().files.is_public(key)})


@bp.post("/internal/media/referenced")
@doc("Which of these media keys any work still uses", body=MediaKeysSchema)
def media_referenced():
    keys = load_json(MediaKeysSchema())["keys"]
    return ok({"referenced": _gallery().files.in_use(keys)})


@bp.get("/openapi.json")
@doc("This service's OpenAPI description")
def openapi_spec():
    return spec_response("AIGC platform: gallery")
