"""Wire shapes of the gallery: what a request may carry and how a work is rendered."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from shared.db import MAX_ID, isoformat, utcnow
from shared.tokens import Claims
from services.gallery.authors import AuthorDirectory
from services.gallery.files import WorkFiles
from services.gallery.models import Notification, Work, WorkReport

MAX_TAGS = 10
MAX_PAGE = 100_000
MAX_PAGE_SIZE = 100
MAX_BATCH = 100
GALLERY_SORTS = ("newest", "hottest", "views", "trending")
MY_SORTS = ("newest", "oldest", "likes", "views")
PERIODS = ("all", "today", "week", "month")
BATCH_ACTIONS = ("publish", "unpublish", "tag", "delete")
OUTPUT_ID = validate.Regexp(r"^[A-Za-z0-9_-]{1,64}$", error="Not a valid id.")
NOTIFICATION_TYPE = validate.Regexp(r"^[a-z]+(\.[a-z_]+)+$", error="Not a notification type.")
NEW_FOR = timedelta(hours=24)


class TrimmedString(fields.String):
    """A string with surrounding whitespace removed before validation."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return super()._deserialize(value, attr, data, **kwargs).strip()


class StrictBoolean(fields.Boolean):
    """Only JSON true/false; 1, 0 and strings are refused."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class Tags(fields.List):
    """Up to ten trimmed tags of 1–20 characters, duplicates dropped, first spelling kept."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(TrimmedString(validate=validate.Length(min=1, max=20)),
                         validate=validate.Length(max=MAX_TAGS), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        return list(dict.fromkeys(super()._deserialize(value, attr, data, **kwargs)))


def _title(required: bool) -> TrimmedString:
    return TrimmedString(required=required, validate=validate.Length(min=1, max=100))


def _description() -> TrimmedString:
    return TrimmedString(validate=validate.Length(max=1000))


class SaveWorkSchema(Schema):
    output_id = fields.String(data_key="outputId", required=True, validate=OUTPUT_ID)
    title = _title(required=True)
    description = _description()
    tags = Tags()
    is_public = StrictBoolean(data_key="isPublic")


class UpdateWorkSchema(Schema):
    title = _title(required=False)
    description = _description()
    tags = Tags()
    is_public = StrictBoolean(data_key="isPublic")

    @validates_schema
    def _not_empty(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            raise ValidationError("Give at least one of title, description, tags, isPublic.")


class SaveJobSchema(Schema):
    job_id = fields.String(data_key="jobId", required=True, validate=OUTPUT_ID)
    title = _title(required=True)
    description = _description()
    tags = Tags()
    is_public = StrictBoolean(data_key="isPublic")


class BatchSchema(Schema):
    ids = fields.List(fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_ID)), required=True,
                      validate=validate.Length(min=1, max=MAX_BATCH))
    action = fields.String(required=True, validate=validate.OneOf(BATCH_ACTIONS))
    tags = Tags()

    @validates_schema
    def _tags_for_tagging(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("action") == "tag" and not data.get("tags"):
            raise ValidationError("Give the tags to add.", field_name="tags")
        if data.get("action") != "tag" and "tags" in data:
            raise ValidationError("Only the tag action takes tags.", field_name="tags")

    @post_load
    def _unique_ids(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        data["ids"] = list(dict.fromkeys(data["ids"]))
        return data


def _page_size() -> fields.Integer:
    return fields.Integer(data_key="pageSize", load_default=24, validate=validate.Range(min=1, max=MAX_PAGE_SIZE))


def _search() -> TrimmedString:
    return TrimmedString(load_default="", validate=validate.Length(max=100))


def _tag_filter() -> TrimmedString:
    return TrimmedString(validate=validate.Length(min=1, max=20))


def _model_filter() -> TrimmedString:
    return TrimmedString(validate=validate.Length(min=1, max=128))


class MyWorksQuerySchema(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    page_size = _page_size()
    search = _search()
    visibility = fields.String(load_default="all", validate=validate.OneOf(("all", "public", "private", "hidden")))
    tag = _tag_filter()
    model = _model_filter()
    date_from = fields.Date(data_key="dateFrom")
    date_to = fields.Date(data_key="dateTo")
    sort = fields.String(load_default="newest", validate=validate.OneOf(MY_SORTS))

    @validates_schema
    def _ordered_dates(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            raise ValidationError("dateFrom must not be after dateTo.", field_name="dateFrom")


class GalleryQuerySchema(Schema):
    cursor = fields.String(validate=validate.Length(min=1, max=200))
    page_size = _page_size()
    search = _search()
    sort = fields.String(load_default="newest", validate=validate.OneOf(GALLERY_SORTS))
    period = fields.String(load_default="all", validate=validate.OneOf(PERIODS))
    tag = _tag_filter()
    model = _model_filter()
    author_id = fields.Integer(data_key="authorId", validate=validate.Range(min=1, max=MAX_ID))


class ReportSchema(Schema):
    reason = TrimmedString(required=True, validate=validate.Length(min=1, max=500))


class HideSchema(Schema):
    reason = TrimmedString(required=True, validate=validate.Length(min=1, max=500))


class AdminWorksQuerySchema(Schema):
    search = _search()
    status = fields.String(load_default="all", validate=validate.OneOf(("all", "public", "private", "hidden")))
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    page_size = _page_size()


class ReviewQueueQuerySchema(Schema):
    search = _search()
    state = fields.String(load_default="pending", validate=validate.OneOf(("pending", "rejected", "approved")))
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    page_size = _page_size()


class ReviewDecisionSchema(Schema):
    ids = fields.List(fields.Integer(strict=True, validate=validate.Range(min=1, max=2**31 - 1)), required=True,
                      validate=validate.Length(min=1, max=100))
    action = fields.String(required=True, validate=validate.OneOf(("approve", "reject")))
    reason = TrimmedString(load_default="", validate=validate.Length(max=500))

    @validates_schema
    def _reason_for_rejection(self, data: dict[str, Any], **_: Any) -> None:
        if data["action"] == "reject" and not data.get("reason"):
            raise ValidationError("A rejection needs a reason for the author.", field_name="reason")


class ReportsQuerySchema(Schema):
    status = fields.String(load_default="open", validate=validate.OneOf(("open", "resolved", "all")))
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    page_size = _page_size()


class NotificationsQuerySchema(Schema):
    status = fields.String(load_default="all", validate=validate.OneOf(("all", "read", "unread")))
    type = fields.String(validate=[NOTIFICATION_TYPE, validate.Length(max=32)])
    before = fields.Integer(validate=validate.Range(min=1, max=MAX_ID))
    page_size = _page_size()


class InternalNotificationSchema(Schema):
    user_id = fields.Integer(data_key="userId", strict=True, required=True, validate=validate.Range(min=1, max=MAX_ID))
    type = fields.String(required=True, validate=[NOTIFICATION_TYPE, validate.Length(max=32)])
    title = TrimmedString(required=True, validate=validate.Length(min=1, max=200))
    body = TrimmedString(load_default="", validate=validate.Length(max=1000))
    data = fields.Dict(keys=fields.String(), load_default=dict)
    dedupe_key = fields.String(data_key="dedupeKey", validate=validate.Length(min=1, max=128))


class IdList(fields.Field):
    """Up to ``MAX_PAGE_SIZE`` comma-separated work ids (``1,2,3``), duplicates dropped."""

    default_error_messages = {"invalid": "Give comma-separated ids (at most 100)."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[int]:
        parts = value.split(",") if isinstance(value, str) and value else []
        if not parts or len(parts) > MAX_PAGE_SIZE or \
                not all(part.isascii() and part.isdigit() and len(part) <= 19 for part in parts):
            raise self.make_error("invalid")
        ids = list(dict.fromkeys(int(part) for part in parts))
        if not all(1 <= work_id <= MAX_ID for work_id in ids):
            raise self.make_error("invalid")
        return ids


class LikedQuerySchema(Schema):
    work_ids = IdList(data_key="workIds", required=True)


class MediaKeysSchema(Schema):
    keys = fields.List(fields.String(validate=validate.Length(min=1, max=255)), required=True,
                       validate=validate.Length(min=1, max=1000))


# Rows as JSON

class WorkPresenter:
    """Works as JSON for one viewer: media URLs from the work's files, and the author's
    current name and avatar from auth's directory (the name stored on the work when auth
    does not know it)."""

    def __init__(self, files: WorkFiles, authors: AuthorDirectory, featured_likes: int) -> None:
        self.files = files
        self.authors = authors
        self.featured_likes = featured_likes

    def items(self, works: list[Work], viewer_id: int | None, liked: set[int]) -> list[dict[str, Any]]:
        """Gallery cards or rows of "my works"; ``liked`` holds the ids the viewer liked."""
        directory = self.authors.lookup(w.user_id for w in works)
        now = utcnow()
        return [self.item(w, viewer_id=viewer_id, liked=w.id in liked, author=_author(w, directory), now=now)
                for w in works]

    def item(self, work: Work, *, viewer_id: int | None, liked: bool, author: dict[str, Any],
             now: datetime) -> dict[str, Any]:
        """A work as a gallery card or a row of "my works"."""
        image_url, thumbnail_url = self.files.urls(work)
        item = {
            "id": work.id, "title": work.title, "description": work.description, "tags": list(work.tags or []),
            "isPublic": work.is_public, "imageUrl": image_url, "thumbnailUrl": thumbnail_url,
            "width": work.width, "height": work.height, "prompt": work.prompt, "model": work.model,
            "author": author, "likes": work.likes_count, "views": work.views_count,
            "downloads": work.downloads_count, "isLiked": liked,
            "isOwner": viewer_id is not None and viewer_id == work.user_id,
            "isNew": now - work.created_at < NEW_FOR,
            "featured": work.featured_at is not None or work.likes_count >= self.featured_likes,
            "createdAt": isoformat(work.created_at), "updatedAt": isoformat(work.updated_at),
        }
        if item["isOwner"] or work.is_hidden:
            item["hidden"] = work.is_hidden
            item["hiddenReason"] = work.hidden_reason if item["isOwner"] else None
        if item["isOwner"]:
            # pending: shown as "审核中" to its author; rejected: with the moderator's reason
            item["reviewState"] = work.review_state
            item["reviewReason"] = work.review_reason if work.review_state == "rejected" else None
        return item

    def moderated_items(self, works: list[Work]) -> list[dict[str, Any]]:
        """Works as moderators list them: with whether and why each is hidden."""
        directory = self.authors.lookup(w.user_id for w in works)
        now = utcnow()
        return [{**self.item(w, viewer_id=None, liked=False, author=_author(w, directory), now=now),
                 "hidden": w.is_hidden, "hiddenReason": w.hidden_reason, "listed": w.listed,
                 "reviewState": w.review_state, "reviewReason": w.review_reason,
                 "reviewCategories": list(w.review_categories or [])} for w in works]

    def detail(self, work: Work, viewer: Claims | None, liked: bool) -> dict[str, Any]:
        """Everything about one work, including what it takes to reproduce it."""
        viewer_id = viewer.user_id if viewer else None
        directory = self.authors.lookup([work.user_id])
        item = self.item(work, viewer_id=viewer_id, liked=liked, author=_author(work, directory), now=utcnow())
        params = dict(work.params or {})
        item.update({
            "hidden": work.is_hidden, "hiddenReason": work.hidden_reason if item["isOwner"] else None,
            "fileSize": work.file_size, "sha256": work.sha256, "workflow": work.workflow,
            "workflowVersion": work.workflow_version, "negativePrompt": params.get("negativePrompt", ""),
            "params": params, "graph": work.graph, "sourceWorkId": work.source_work_id,
            "jobId": work.job_id, "outputId": work.output_id,
        })
        return item


def _author(work: Work, directory: dict[int, dict[str, Any]]) -> dict[str, Any]:
    entry = directory.get(work.user_id) or {}
    return {"id": work.user_id, "username": entry.get("username") or work.author_username,
            "displayName": entry.get("displayName"), "avatarUrl": entry.get("avatarUrl")}


def notification_json(note: Notification) -> dict[str, Any]:
    return {"id": note.id, "type": note.type, "title": note.title, "body": note.body, "data": note.data or {},
            "isRead": note.is_read, "createdAt": isoformat(note.created_at), "readAt": isoformat(note.read_at)}


def filed_report_json(report: WorkReport) -> dict[str, Any]:
    """A report as its reporter sees it."""
    return {"id": report.id, "workId": report.work_id, "reason": report.reason, "status": report.status,
            "createdAt": isoformat(report.created_at)}


def report_json(report: WorkReport, work: Work | None, thumbnail_url: str | None = None) -> dict[str, Any]:
    """A report as moderators see it, with a summary of the work when it still exists: enough to judge it at a
    glance (its thumbnail, a signed URL when the work is not listed) and to lay the picture out at its shape."""
    summary = None if work is None else {"id": work.id, "title": work.title, "userId": work.user_id,
                                         "hidden": work.is_hidden, "isPublic": work.is_public,
                                         "thumbnailUrl": thumbnail_url, "width": work.width, "height": work.height}
    return {"id": report.id, "workId": report.work_id, "reporterId": report.reporter_id, "reason": report.reason,
            "status": report.status, "createdAt": isoformat(report.created_at),
            "resolvedAt": isoformat(report.resolved_at), "resolvedBy": report.resolved_by, "work": summary}
