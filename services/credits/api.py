"""Routes of the credits service: internal movements (service token) and the user's own view."""
from __future__ import annotations

from flask import Blueprint, current_app

from shared.errors import ok
from shared.tokens import require_admin, require_user
from shared.web import load_json, load_query
from services.credits.schemas import (CaptureSchema, GrantSchema, HoldSchema, OpenAccountSchema,
                                      ReleaseSchema, TransactionsQuerySchema)
from services.credits.service import CreditsService

bp = Blueprint("credits", __name__)


def _credits() -> CreditsService:
    return current_app.extensions["credits"]


@bp.post("/internal/accounts")
def open_account():
    data = load_json(OpenAccountSchema())
    return ok(_credits().open_account(data["user_id"]).to_dict())


@bp.post("/internal/holds")
def hold():
    data = load_json(HoldSchema())
    result = _credits().hold(data["user_id"], data["job_id"], data["amount"], data["description"])
    return ok(result.to_dict(), 201 if result.created else 200)


@bp.post("/internal/holds/<job_id>/capture")
def capture(job_id: str):
    data = load_json(CaptureSchema())
    return ok(_credits().capture(job_id, data["amount"], data["idempotency_key"]))


@bp.post("/internal/holds/<job_id>/release")
def release(job_id: str):
    data = load_json(ReleaseSchema())
    return ok(_credits().release(job_id, data["idempotency_key"]))


@bp.get("/api/users/credits")
def my_balance():
    claims = require_user()
    return ok(_credits().open_account(claims.user_id).to_dict())


@bp.get("/api/users/credits/transactions")
def my_transactions():
    claims = require_user()
    query = load_query(TransactionsQuerySchema())
    page = _credits().transactions(claims.user_id, query["page"], query["page_size"], query["type"])
    return ok(page.to_dict())


@bp.post("/api/admin/credits/grant")
def grant():
    admin = require_admin()
    data = load_json(GrantSchema())
    balance = _credits().grant(data["user_id"], data["amount"], data["reason"], operator_id=admin.user_id)
    return ok(balance.to_dict())
