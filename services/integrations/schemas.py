"""Input schemas of the integrations API (unknown fields are rejected: marshmallow 4 RAISE)."""
from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from services.integrations.models import WEBHOOK_EVENTS
from services.render.client import LANES

MAX_ID = 2**63 - 1
# A service account's name is its username in auth and part of its queue names.
NAME = validate.Regexp(r"^[a-z][a-z0-9_]{2,19}\Z", error="3 to 20 lower-case letters, digits or underscores, "
                                                          "starting with a letter.")
WEEK = 7 * 86400


def _id(**kwargs: Any) -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_ID), **kwargs)


class ServiceAccountCreateSchema(Schema):
    name = fields.String(required=True, validate=NAME)
    owner_id = _id(data_key="ownerId", required=True)
    description = fields.String(load_default="", validate=validate.Length(max=255))
    allowed_workflows = fields.List(fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_.-]{1,64}\Z")),
                                    data_key="allowedWorkflows", load_default=None, allow_none=True,
                                    validate=validate.Length(min=1, max=50))
    max_active_jobs = fields.Integer(data_key="maxActiveJobs", load_default=None, strict=True,
                                     validate=validate.Range(min=1, max=1000))
    url_ttl_seconds = fields.Integer(data_key="urlTtlSeconds", load_default=None, strict=True,
                                     validate=validate.Range(min=60, max=WEEK))
    lane = fields.String(load_default="batch", validate=validate.OneOf(LANES))
    budget = fields.Integer(load_default=0, strict=True, validate=validate.Range(min=0, max=1_000_000))


class ServiceAccountUpdateSchema(Schema):
    description = fields.String(validate=validate.Length(max=255))
    allowed_workflows = fields.List(fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_.-]{1,64}\Z")),
                                    data_key="allowedWorkflows", allow_none=True, validate=validate.Length(min=1, max=50))
    max_active_jobs = fields.Integer(data_key="maxActiveJobs", strict=True, validate=validate.Range(min=1, max=1000))
    url_ttl_seconds = fields.Integer(data_key="urlTtlSeconds", strict=True, validate=validate.Range(min=60, max=WEEK))
    lane = fields.String(validate=validate.OneOf(LANES))
    is_active = fields.Boolean(data_key="isActive", truthy={True}, falsy={False})

    @validates_schema
    def _not_empty(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if not data:
            raise ValidationError("Give at least one field to change.")


class RotateKeySchema(Schema):
    grace_seconds = fields.Integer(data_key="graceSeconds", load_default=0, strict=True,
                                   validate=validate.Range(min=0, max=WEEK))


class BudgetSchema(Schema):
    amount = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=1_000_000))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=255))
    idempotency_key = fields.String(data_key="idempotencyKey", load_default=None, validate=validate.Length(min=1, max=80))


class PageQuerySchema(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    page_size = fields.Integer(data_key="pageSize", load_default=20, validate=validate.Range(min=1, max=100))


class WebhookOwnerQuerySchema(Schema):
    user_id = fields.Integer(data_key="userId", load_default=None, validate=validate.Range(min=1, max=MAX_ID))


class WebhookCreateSchema(Schema):
    url = fields.String(required=True, validate=validate.Length(min=8, max=2000))
    events = fields.List(fields.String(validate=validate.OneOf(WEBHOOK_EVENTS)), required=True,
                         validate=validate.Length(min=1, max=len(WEBHOOK_EVENTS)))
    description = fields.String(load_default="", validate=validate.Length(max=255))
    user_id = _id(data_key="userId", load_default=None)
