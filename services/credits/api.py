"""Routes of the credits service: prices (public), the user's own balance and ledger,
internal movements (service token only) and administration (admin token)."""
from __future__ import annotations

from flask import Blueprint, current_app

from shared.errors import ok
from shared.openapi import doc, spec_response
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
@doc("Prices of each workflow, in credits per image")
def pricing():
    return ok({"pricing": dict(_credits().config.pricing), "currency": "credits"})


@bp.post("/internal/accounts")
@doc("Open a user's account and grant the signup bonus once", body=OpenAccountSchema,
     errors={409: "ACCOUNT_CLOSED"})
def open_account():
    data = load_json(OpenAccountSchema())
    return ok(_credits().open_account(data["user_id"]).to_dict())


@bp.post("/internal/holds")
@doc("Hold credits for a render job (idempotent by job id)", body=HoldSchema, status=201,
     errors={402: "INSUFFICIENT_CREDITS", 409: "IDEMPOTENCY_CONFLICT, PRICE_CHANGED, ACCOUNT_CLOSED",
             422: "UNKNOWN_WORKFLOW"},
     description="201 for a new hold, 200 for the replay of an existing one.")
def hold():
    data = load_json(HoldSchema())
    result = _credits().hold(data["user_id"], data["job_id"], data["workflow"], data["images"],
                             data["description"], data["expected_cost"])
    return ok(result.to_dict(), 201 if result.created else 200)


@bp.post("/internal/holds/<job_id>/capture")
@doc("Spend part of a job's hold (idempotent by key)", body=CaptureSchema,
     errors={404: "HOLD_NOT_FOUND", 409: "HOLD_EXCEEDED, HOLD_SETTLED, IDEMPOTENCY_CONFLICT"})
def capture(job_id: str):
    data = load_json(CaptureSchema())
    return ok(_credits().capture(job_id, data["amount"], data["idempotency_key"]))


@bp.post("/internal/holds/<job_id>/release")
@doc("Return what a job still holds and close the hold (idempotent)", body=ReleaseSchema,
     errors={404: "HOLD_NOT_FOUND", 409: "IDEMPOTENCY_CONFLICT"})
def release(job_id: str):
    data = load_json(ReleaseSchema())
    return ok(_credits().release(job_id, data["idempotency_key"]))


@bp.get("/api/users/credits")
@doc("The caller's balance (available and held)", auth="user")
def my_balance():
    claims = require_user()
    return ok(_credits().balance(claims.user_id).to_dict())


@bp.get("/api/users/credits/stats")
@doc("The caller's credit statistics", auth="user")
def my_stats():
    claims = require_user()
    return ok(_credits().stats(claims.user_id))


@bp.get("/api/users/credits/transactions")
@doc("The caller's ledger, newest first", auth="user", query=TransactionsQuerySchema)
def my_transactions():
    claims = require_user()
    query = load_query(TransactionsQuerySchema())
    page = _credits().transactions(claims.user_id, query["page"], query["page_size"], _ledger_filter(query))
    return ok(page.to_dict())


@bp.post("/api/users/credits/redeem")
@doc("Redeem a code for credits", auth="user", body=RedeemSchema, errors={
    404: "REDEEM_CODE_NOT_FOUND",
    409: "REDEEM_CODE_ALREADY_REDEEMED, REDEEM_CODE_EXPIRED, REDEEM_CODE_USED_UP, ACCOUNT_CLOSED"})
def redeem():
    claims = require_user()
    data = load_json(RedeemSchema())
    return ok(_credits().redeem(claims.user_id, data["code"]))


@bp.post("/api/admin/credits/grant")
@doc("Grant credits to a user", auth="admin", body=AdjustSchema,
     errors={404: "ACCOUNT_NOT_FOUND", 409: "IDEMPOTENCY_CONFLICT, ACCOUNT_CLOSED"})
def grant():
    admin = require_admin()
    data = load_json(AdjustSchema())
    balance = _credits().grant(data["user_id"], data["amount"], data["reason"], admin.user_id,
                               data["idempotency_key"])
    return ok(balance.to_dict())


@bp.post("/api/admin/credits/deduct")
@doc("Deduct credits from a user", auth="admin", body=AdjustSchema,
     errors={404: "ACCOUNT_NOT_FOUND", 409: "BALANCE_TOO_LOW, IDEMPOTENCY_CONFLICT, ACCOUNT_CLOSED"})
def deduct():
    admin = require_admin()
    data = load_json(AdjustSchema())
    balance = _credits().deduct(data["user_id"], data["amount"], data["reason"], admin.user_id,
                                data["idempotency_key"])
    return ok(balance.to_dict())


@bp.get("/api/admin/credits/accounts")
@doc("List credit accounts", auth="admin", query=AccountsQuerySchema)
def accounts():
    require_admin()
    query = load_query(AccountsQuerySchema())
    return ok(_credits().accounts(query["page"], query["page_size"], query["user_id"]).to_dict())


@bp.get("/api/admin/credits/accounts/<int:user_id>/transactions")
@doc("A user's ledger", auth="admin", query=TransactionsQuerySchema, errors={404: "ACCOUNT_NOT_FOUND"})
def account_transactions(user_id: int):
    require_admin()
    query = load_query(TransactionsQuerySchema())
    page = _credits().account_transactions(user_id, query["page"], query["page_size"], _ledger_filter(query))
    return ok(page.to_dict())


@bp.post("/api/admin/credits/redeem-codes")
@doc("Create a redeem code", auth="admin", body=RedeemCodeCreateSchema, status=201,
     errors={409: "REDEEM_CODE_EXISTS"})
def create_redeem_code():
    admin = require_admin()
    data = load_json(RedeemCodeCreateSchema())
    code = _credits().create_redeem_code(data["amount"], data["max_uses"], admin.user_id, data["code"],
                                         data["expires_at"], data["description"])
    return ok(code, 201)


@bp.get("/api/admin/credits/redeem-codes")
@doc("List redeem codes", auth="admin", query=PageQuerySchema)
def redeem_codes():
    require_admin()
    query = load_query(PageQuerySchema())
    return ok(_credits().redeem_codes(query["page"], query["page_size"]).to_dict())


@bp.get("/openapi.json")
@doc("This service's OpenAPI description")
def openapi_spec():
    return spec_response("AIGC platform: credits")
