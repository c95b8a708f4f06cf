"""Input schemas of the credits API (unknown fields are rejected: marshmallow 4 RAISE) and
the JSON of its rows."""
from __future__ import annotations

from datetime import timezone
from typing import Any, Callable, TypeVar

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from shared.db import isoformat
from shared.web import CommaSeparated
from services.credits.models import LEDGER_TYPES, CreditAccount, CreditLedger, RedeemCode
from services.credits.reports import JobLine, Page

T = TypeVar("T")

JOB_ID = validate.Length(min=1, max=64)
KEY = validate.Length(min=1, max=150)
USER_ID = validate.Range(min=1, max=2**63 - 1)
# Bounded so no sum of movements can leave a 32-bit balance column.
AMOUNT = validate.Range(min=1, max=1_000_000)
REASON = validate.Length(min=1, max=255)
CODE = validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9-]{3,31}$",
                       error="4 to 32 letters, digits or dashes, starting with a letter or digit.")
MAX_IMAGES = 16
MAX_PAGE_SIZE = 100


def _user_id(**kwargs) -> fields.Integer:
    return fields.Integer(data_key="userId", strict=True, validate=USER_ID, **kwargs)


class OpenAccountSchema(Schema):
    user_id = _user_id(required=True)
    signup_bonus = fields.Boolean(data_key="signupBonus", load_default=True, truthy={True}, falsy={False})


class HoldSchema(Schema):
    user_id = _user_id(required=True)
    job_id = fields.String(data_key="jobId", required=True, validate=JOB_ID)
    workflow = fields.String(required=True, validate=validate.Length(min=1, max=64))
    images = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=MAX_IMAGES))
    expected_cost = fields.Integer(data_key="expectedCost", strict=True, load_default=None,
                                   validate=validate.Range(min=1, max=MAX_IMAGES * 100_000))
    description = fields.String(load_default="", validate=validate.Length(max=255))


class CaptureSchema(Schema):
    images = fields.Integer(load_default=1, strict=True, validate=validate.Range(min=1, max=MAX_IMAGES))
    idempotency_key = fields.String(data_key="idempotencyKey", required=True, validate=KEY)


class SettleSchema(Schema):
    images = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=MAX_IMAGES))
    idempotency_key = fields.String(data_key="idempotencyKey", required=True, validate=KEY)


class ReleaseSchema(Schema):
    idempotency_key = fields.String(data_key="idempotencyKey", required=True, validate=KEY)


class PageQuerySchema(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    page_size = fields.Integer(data_key="pageSize", load_default=20, validate=validate.Range(min=1, max=MAX_PAGE_SIZE))


class LedgerQuerySchema(PageQuerySchema):
    type = fields.String(load_default=None, validate=validate.OneOf(LEDGER_TYPES))
    date_from = fields.Date(data_key="from", load_default=None)
    date_to = fields.Date(data_key="to", load_default=None)

    @validates_schema
    def _ordered(self, data, **_kwargs) -> None:
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            raise ValidationError("Must not be before 'from'.", "to")


class TransactionsQuerySchema(LedgerQuerySchema):
    group_by = fields.String(data_key="groupBy", load_default=None, validate=validate.OneOf(("job",)))

    @validates_schema
    def _one_view(self, data, **_kwargs) -> None:
        if data.get("group_by") and data.get("type"):
            raise ValidationError("A ledger read by job is not filtered by type.", "type")


class BalancesQuerySchema(Schema):
    user_ids = CommaSeparated(fields.Integer(validate=USER_ID), max_items=MAX_PAGE_SIZE, data_key="userIds",
                              required=True)


class AccountsQuerySchema(PageQuerySchema):
    user_id = fields.Integer(data_key="userId", load_default=None, validate=USER_ID)


class AdjustSchema(Schema):
    user_id = _user_id(required=True)
    amount = fields.Integer(required=True, strict=True, validate=AMOUNT)
    reason = fields.String(required=True, validate=REASON)
    idempotency_key = fields.String(data_key="idempotencyKey", load_default=None, validate=KEY)


class RedeemCodeCreateSchema(Schema):
    code = fields.String(load_default=None, validate=CODE)
    amount = fields.Integer(required=True, strict=True, validate=AMOUNT)
    max_uses = fields.Integer(data_key="maxUses", required=True, strict=True,
                              validate=validate.Range(min=1, max=1_000_000))
    expires_at = fields.AwareDateTime(data_key="expiresAt", load_default=None)
    description = fields.String(load_default="", validate=validate.Length(max=255))

    @post_load
    def _naive_utc(self, data, **_kwargs):
        if data["expires_at"] is not None:
            data["expires_at"] = data["expires_at"].astimezone(timezone.utc).replace(tzinfo=None)
        return data


class RedeemSchema(Schema):
    code = fields.String(required=True, validate=CODE)


def page_json(page: Page[T], present: Callable[[T], dict[str, Any]]) -> dict[str, Any]:
    return {"items": [present(item) for item in page.items], "page": page.page, "pageSize": page.page_size,
            "total": page.total}


def account_json(row: CreditAccount) -> dict[str, Any]:
    return {"userId": row.user_id, "available": row.available, "held": row.held,
            "lifetimeEarned": row.lifetime_earned, "lifetimeSpent": row.lifetime_spent,
            "createdAt": isoformat(row.created_at), "updatedAt": isoformat(row.updated_at),
            "closedAt": isoformat(row.closed_at)}


def redeem_code_json(row: RedeemCode) -> dict[str, Any]:
    return {"code": row.code, "amount": row.amount, "maxUses": row.max_uses, "uses": row.uses,
            "expiresAt": isoformat(row.expires_at), "description": row.description,
            "createdBy": row.created_by, "createdAt": isoformat(row.created_at)}


def ledger_entry_json(row: CreditLedger) -> dict[str, Any]:
    """A ledger row as its user sees it."""
    return {"id": row.id, "type": row.type, "amount": row.amount, "heldChange": row.held_change,
            "balanceBefore": row.balance_before, "balanceAfter": row.balance_after,
            "reference": row.reference, "description": row.description,
            "createdAt": isoformat(row.created_at)}


def job_line_json(line: JobLine) -> dict[str, Any]:
    """A ledger row as read by job: a job's hold with what it finally cost (``amount``, the net
    change of the available balance so far), what it still holds, the images charged, and the
    render domain's summary of the job (its fields are null when unknown); other movements
    as ``ledger_entry_json`` with ``kind: "entry"``."""
    entry, hold = line.entry, line.hold
    if hold is None:
        return {"kind": "entry", **ledger_entry_json(entry)}
    job = line.job or {}
    return {"kind": "job", "jobId": hold.job_id, "workflow": hold.workflow, "status": job.get("status"),
            "holdStatus": hold.status, "imagesRequested": hold.images,
            "images": hold.captured // hold.price_per_image if hold.price_per_image else None,
            "pricePerImage": hold.price_per_image, "amount": hold.released - hold.amount,
            "held": hold.amount - hold.captured - hold.released, "prompt": job.get("prompt"),
            "thumbnailUrl": job.get("thumbnailUrl"), "width": job.get("width"), "height": job.get("height"),
            "createdAt": isoformat(entry.created_at)}


def redemption_json(row: CreditLedger) -> dict[str, Any]:
    return {"userId": row.user_id, "amount": row.amount, "createdAt": isoformat(row.created_at)}


def admin_ledger_entry_json(row: CreditLedger) -> dict[str, Any]:
    """A ledger row as administrators see it: with the operator of an adjustment."""
    return {**ledger_entry_json(row), "operatorId": row.operator_id}
