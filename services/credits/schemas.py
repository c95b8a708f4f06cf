"""Input schemas of the credits API. Unknown fields are rejected (marshmallow 4 RAISE)."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from services.credits.models import LEDGER_TYPES

JOB_ID = validate.Length(min=1, max=64)
KEY = validate.Length(min=1, max=191)
POSITIVE = validate.Range(min=1, max=1_000_000)


class OpenAccountSchema(Schema):
    user_id = fields.Integer(data_key="userId", required=True, strict=True, validate=validate.Range(min=1))


class HoldSchema(Schema):
    user_id = fields.Integer(data_key="userId", required=True, strict=True, validate=validate.Range(min=1))
    job_id = fields.String(data_key="jobId", required=True, validate=JOB_ID)
    amount = fields.Integer(required=True, strict=True, validate=POSITIVE)
    description = fields.String(load_default="", validate=validate.Length(max=255))


class CaptureSchema(Schema):
    amount = fields.Integer(required=True, strict=True, validate=POSITIVE)
    idempotency_key = fields.String(data_key="idempotencyKey", required=True, validate=KEY)


class ReleaseSchema(Schema):
    idempotency_key = fields.String(data_key="idempotencyKey", required=True, validate=KEY)


class TransactionsQuerySchema(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1))
    page_size = fields.Integer(data_key="pageSize", load_default=20, validate=validate.Range(min=1, max=100))
    type = fields.String(load_default=None, validate=validate.OneOf(LEDGER_TYPES))


class GrantSchema(Schema):
    user_id = fields.Integer(data_key="userId", required=True, strict=True, validate=validate.Range(min=1))
    amount = fields.Integer(required=True, strict=True, validate=POSITIVE)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=255))
