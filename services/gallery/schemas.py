"""Wire shapes of the gallery: what a request may carry and how a work is rendered."""
from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from shared.db import isoformat
from shared.storage import LocalStorage

from .models import Work

MAX_TAGS = 10
MAX_PAGE = 100_000
SORTS = ("newest", "likes", "views")
OUTPUT_ID = validate.Regexp(r"^[A-Za-z0-9_-]{1,64}$", error="Not a valid output id.")


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


class MyWorksQuerySchema(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    page_size = fields.Integer(data_key="pageSize", load_default=24, validate=validate.Range(min=1, max=100))
    search = TrimmedString(load_default="", validate=validate.Length(max=100))


class GalleryQuerySchema(MyWorksQuerySchema):
    sort = fields.String(load_default="newest", validate=validate.OneOf(SORTS))


def dump_work(work: Work, *, viewer_id: int | None, is_liked: bool, storage: LocalStorage) -> dict[str, Any]:
    params = work.params or {}
    return {
        "id": work.id,
        "title": work.title,
        "description": work.description,
        "tags": list(work.tags or []),
        "isPublic": work.is_public,
        "imageUrl": storage.url(work.image_key),
        "thumbnailUrl": storage.url(work.thumbnail_key),
        "width": work.width,
        "height": work.height,
        "fileSize": work.file_size,
        "workflow": work.workflow,
        "prompt": work.prompt,
        "negativePrompt": params.get("negativePrompt", ""),
        "params": params,
        "author": {"id": work.user_id, "username": work.author_username},
        "likes": work.likes_count,
        "views": work.views_count,
        "isLiked": is_liked,
        "isOwner": viewer_id is not None and viewer_id == work.user_id,
        "jobId": work.job_id,
        "outputId": work.output_id,
        "createdAt": isoformat(work.created_at),
        "updatedAt": isoformat(work.updated_at),
    }
