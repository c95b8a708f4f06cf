"""Input schemas of the safety API (unknown fields are rejected: marshmallow 4 RAISE)."""
from __future__ import annotations

from datetime import timezone

from marshmallow import Schema, fields, validate

from services.safety.categories import CATEGORIES, KINDS, SEVERITIES

MAX_ID = 2**63 - 1


class TermSchema(Schema):
    text = fields.String(required=True, validate=validate.Length(min=1, max=200))
    kind = fields.String(load_default="term", validate=validate.OneOf(KINDS))
    category = fields.String(required=True, validate=validate.OneOf(sorted(CATEGORIES)))
    severity = fields.String(load_default="block", validate=validate.OneOf(SEVERITIES))
    note = fields.String(load_default="", validate=validate.Length(max=255))


class TermUpdateSchema(Schema):
    text = fields.String(validate=validate.Length(min=1, max=200))
    kind = fields.String(validate=validate.OneOf(KINDS))
    category = fields.String(validate=validate.OneOf(sorted(CATEGORIES)))
    severity = fields.String(validate=validate.OneOf(SEVERITIES))
    note = fields.String(validate=validate.Length(max=255))


class TermBulkSchema(Schema):
    items = fields.List(fields.Nested(TermSchema), required=True, validate=validate.Length(min=1, max=10_000))


class TermQuerySchema(Schema):
    q = fields.String(load_default=None, validate=validate.Length(max=200))
    category = fields.String(load_default=None, validate=validate.OneOf(sorted(CATEGORIES)))
    severity = fields.String(load_default=None, validate=validate.OneOf(SEVERITIES))
    kind = fields.String(load_default=None, validate=validate.OneOf(KINDS))
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    page_size = fields.Integer(data_key="pageSize", load_default=50, validate=validate.Range(min=1, max=200))


class CheckSchema(Schema):
    text = fields.String(required=True, validate=validate.Length(max=20_000))


class AuditQuerySchema(Schema):
    q = fields.String(load_default=None, validate=validate.Length(max=200))
    action = fields.String(load_default=None, validate=validate.Length(max=32))
    source = fields.String(load_default=None, validate=validate.Length(max=64))
    category = fields.String(load_default=None, validate=validate.Length(max=32))
    severity = fields.String(load_default=None, validate=validate.OneOf(SEVERITIES))
    subject = fields.String(load_default=None, validate=validate.Length(max=100))
    actor_id = fields.Integer(data_key="actorId", load_default=None, validate=validate.Range(min=1, max=MAX_ID))
    since = fields.AwareDateTime(load_default=None, default_timezone=timezone.utc)
    until = fields.AwareDateTime(load_default=None, default_timezone=timezone.utc)
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    page_size = fields.Integer(data_key="pageSize", load_default=50, validate=validate.Range(min=1, max=200))
