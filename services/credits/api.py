"""Routes of the credits service: prices (public), the user's own balance and ledger,
internal movements (service token only) and administration (admin token)."""
from __future__ import annotations

from flask import Blueprint, current_app

from shared.errors import ok
from shared.tokens import require_admin, require_user
from shared.web import load_json, load_query
from services.credits.schemas import (AccountsQuerySchema, AdjustSchema, CaptureSchema, HoldSchema,
                                      OpenAccountSchema, PageQuerySchema, RedeemCodeCreateSchema, RedeemSchema,
                                      ReleaseSchema, TransactionsQuerySchema)
from services.credits.service import CreditsService, LedgerFilter

bp = Blueprint("credits", __name__)


def _credits() -> CreditsService:
    return current_app.extensions["credits"]


def _ledger_filter(query: dict) -> LedgerFilter:
    return LedgerFilter(query["type"], query["date_from"], query["date_to"])


@bp.get("/api/credits/pricing")
def pricing():
    return ok({"pricing": dict(_credits().config.pricing), "currency": "credits"})


@bp.post("/internal/accounts")
def open_account():
    data = load_json(OpenAccountSchema())
    return ok(_credits().open_account(data["user_id"]).to_dict())


@bp.post("/internal/holds")
def hold():
    data = load_json(HoldSchema())
    result = _credits().hold(data["user_id"], data["job_id"], data["workflow"], data["images"],
                             data["description"], data["expected_cost"])
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
    return ok(_credits().balance(claims.user_id).to_dict())


@bp.get("/api/users/credits/stats")
def my_stats():
    claims = require_user()
    return ok(_credits().stats(claims.user_id))


@bp.get("/api/users/credits/transactions")
def my_transactions():
    claims = require_user()
    query = load_query(TransactionsQuerySchema())
    page = _credits().transactions(claims.user_id, query["page"], query["page_size"], _ledger_filter(query))
    return ok(page.to_dict())


@bp.post("/api/users/credits/redeem")
def redeem():
    claims = require_user()
    data = load_json(RedeemSchema())
    return ok(_credits().redeem(claims.user_id, data["code"]))


@bp.post("/api/admin/credits/grant")
def grant():
    admin = require_admin()
    data = load_json(AdjustSchema())
    balance = _credits().grant(data["user_id"], data["amount"], data["reason"], admin.user_id,
                               data["idempotency_key"])
    return ok(balance.to_dict())


@bp.post("/api/admin/credits/deduct")
def deduct():
    admin = require_admin()
    data = load_json(AdjustSchema())
    balance = _credits().deduct(data["user_id"], data["amount"], data["reason"], admin.user_id,
                                data["idempotency_key"])
    return ok(balance.to_dict())


@bp.get("/api/admin/credits/accounts")
def accounts():
    require_admin()
    query = load_query(AccountsQuerySchema())
    return ok(_credits().accounts(query["page"], query["page_size"], query["user_id"]).to_dict())


@bp.get("/api/admin/credits/accounts/<int:user_id>/transactions")
def account_transactions(user_id: int):
    require_admin()
    query = load_query(TransactionsQuerySchema())
    page = _credits().account_transactions(user_id, query["page"], query["page_size"], _ledger_filter(query))
    return ok(page.to_dict())


@bp.post("/api/admin/credits/redeem-codes")
def create_redeem_code():
    admin = require_admin()
    data = load_json(RedeemCodeCreateSchema())
    code = _credits().create_redeem_code(data["amount"], data["max_uses"], admin.user_id, data["code"],
                                         data["expires_at"], data["description"])
    return ok(code, 201)


@bp.get("/api/admin/credits/redeem-codes")
def redeem_codes():
    require_admin()
    query = load_query(PageQuerySchema())
    return ok(_credits().redeem_codes(query["page"], query["page_size"]).to_dict())
