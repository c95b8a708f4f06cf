"""Routes of the credits service: prices (public), the user's own balance and ledger,
internal movements (service token only) and administration (admin token)."""
from __future__ import annotations

from flask import Blueprint, current_app

from shared.errors import ok
from shared.openapi import doc, spec_response
from shared.tokens import require_admin, require_user
from shared.web import load_json, load_query
from services.credits.adjustments import Adjustments
from services.credits.redeem import RedeemCodes
from services.credits.reports import LedgerFilter, Reports
from services.credits.schemas import (AccountsQuerySchema, AdjustSchema, BalancesQuerySchema, CaptureSchema,
                                      HoldSchema, LedgerQuerySchema, OpenAccountSchema, PageQuerySchema,
                                      RedeemCodeCreateSchema, RedeemSchema, ReleaseSchema, SettleSchema,
                                      TransactionsQuerySchema,
                                      account_json, admin_ledger_entry_json, job_line_json, ledger_entry_json,
                                      page_json, redeem_code_json, redemption_json)
from services.credits.service import CreditsService

bp = Blueprint("credits", __name__)
READ_SCOPE = "credits:read"  # what an API token needs to read the balance and the ledger
# The movements every job makes load with schemas built once: building one costs more than a
# load, and a marshmallow schema may load for any number of requests and threads.
HOLD_INPUT, CAPTURE_INPUT, RELEASE_INPUT, SETTLE_INPUT = HoldSchema(), CaptureSchema(), ReleaseSchema(), SettleSchema()


def _credits() -> CreditsService:
    return current_app.extensions["credits"]


def _adjustments() -> Adjustments:
    return current_app.extensions["credits_adjustments"]


def _redeem_codes() -> RedeemCodes:
    return current_app.extensions["credits_redeem_codes"]


def _reports() -> Reports:
    return current_app.extensions["credits_reports"]


def _ledger_filter(query: dict) -> LedgerFilter:
    return LedgerFilter(query["type"], query["date_from"], query["date_to"])


@bp.get("/api/credits/pricing")
@doc("Prices of each workflow, in credits per image")
def pricing():
    return ok({"pricing": _credits().pricing(), "currency": "credits"})


@bp.post("/internal/accounts")
@doc("Open a user's account and grant the signup bonus once (signupBonus false: a service account)",
     body=OpenAccountSchema, errors={409: "ACCOUNT_CLOSED"})
def open_account():
    data = load_json(OpenAccountSchema())
    return ok(_credits().open_account(data["user_id"], data["signup_bonus"]).to_dict())


@bp.get("/internal/accounts")
@doc("Balances of up to 100 users at once (users without an account are left out)", query=BalancesQuerySchema)
def balances():
    query = load_query(BalancesQuerySchema())
    return ok({"items": [{"userId": row.user_id, "available": row.available, "held": row.held}
                         for row in _reports().accounts_of(query["user_ids"])]})


@bp.post("/internal/holds")
@doc("Hold credits for a render job (idempotent by job id)", body=HoldSchema, status=201,
     errors={402: "INSUFFICIENT_CREDITS", 409: "IDEMPOTENCY_CONFLICT, PRICE_CHANGED, ACCOUNT_CLOSED",
             422: "UNKNOWN_WORKFLOW"},
     description="201 for a new hold, 200 for the replay of an existing one.")
def hold():
    return ok(*hold_movement(_credits(), None, load_json(HOLD_INPUT)))


@bp.post("/internal/holds/<job_id>/capture")
@doc("Spend delivered images of a job's hold at its price per image (idempotent by key)", body=CaptureSchema,
     errors={404: "HOLD_NOT_FOUND", 409: "HOLD_EXCEEDED, HOLD_SETTLED, HOLD_UNPRICED, IDEMPOTENCY_CONFLICT"},
     description="`images` (default 1) is how many images this capture delivered; credits charges "
                 "images × the price per image the hold was admitted at. Replaying a key with another "
                 "image count is 409 IDEMPOTENCY_CONFLICT.")
def capture(job_id: str):
    return ok(*capture_movement(_credits(), job_id, load_json(CAPTURE_INPUT)))


@bp.post("/internal/holds/<job_id>/release")
@doc("Return what a job still holds and close the hold (idempotent)", body=ReleaseSchema,
     errors={404: "HOLD_NOT_FOUND", 409: "IDEMPOTENCY_CONFLICT"})
def release(job_id: str):
    return ok(*release_movement(_credits(), job_id, load_json(RELEASE_INPUT)))


@bp.post("/internal/holds/<job_id>/settle")
@doc("Settle a finished job: charge its delivered images and return the rest of the hold, in one movement",
     body=SettleSchema,
     errors={404: "HOLD_NOT_FOUND",
             409: "HOLD_EXCEEDED, HOLD_CAPTURED, HOLD_SETTLED, HOLD_UNPRICED, IDEMPOTENCY_CONFLICT"},
     description="`images` is how many images the job delivered in all, those captured already "
                 "included: credits charges what they still owe at the price per image the hold was "
                 "admitted at (a `capture` ledger row keyed `<idempotencyKey>:capture`), returns the rest "
                 "(a `release` row keyed `<idempotencyKey>:release`) and closes the hold, in one "
                 "transaction. `captured` and `released` are the credits this call moved; a replay answers "
                 "the same, and the same key with another image count is 409 IDEMPOTENCY_CONFLICT. "
                 "409 HOLD_CAPTURED when more images than `images` were captured already.")
def settle(job_id: str):
    return ok(*settle_movement(_credits(), job_id, load_json(SETTLE_INPUT)))


# What the movement routes do with their loaded body, shared with the lean path in front of
# Flask (``services/credits/fast_path.py``): the answer's data and status.

def hold_movement(credits: CreditsService, _job_id: None, data: dict) -> tuple[dict, int]:
    result = credits.hold(data["user_id"], data["job_id"], data["workflow"], data["images"], data["description"],
                          data["expected_cost"])
    return result.to_dict(), 201 if result.created else 200


def capture_movement(credits: CreditsService, job_id: str, data: dict) -> tuple[dict, int]:
    return credits.capture(job_id, data["idempotency_key"], data["images"]), 200


def release_movement(credits: CreditsService, job_id: str, data: dict) -> tuple[dict, int]:
    return credits.release(job_id, data["idempotency_key"]), 200


def settle_movement(credits: CreditsService, job_id: str, data: dict) -> tuple[dict, int]:
    return credits.settle(job_id, data["idempotency_key"], data["images"]), 200


@bp.get("/api/users/credits")
@doc("The caller's balance (available and held)", auth="user", scope=READ_SCOPE)
def my_balance():
    claims = require_user(scope=READ_SCOPE)
    return ok(_credits().balance(claims.user_id).to_dict())


@bp.get("/api/users/credits/stats")
@doc("The caller's credit statistics", auth="user", scope=READ_SCOPE)
def my_stats():
    claims = require_user(scope=READ_SCOPE)
    return ok(_reports().stats(claims.user_id))


@bp.get("/api/users/credits/transactions")
@doc("The caller's ledger, newest first", auth="user", scope=READ_SCOPE, query=TransactionsQuerySchema,
     description="With `groupBy=job`, one row per render job (`kind: \"job\"`: jobId, workflow, status, "
                 "images, amount, held, prompt, thumbnailUrl, createdAt) beside every other movement "
                 "(`kind: \"entry\"`).")
def my_transactions():
    claims = require_user(scope=READ_SCOPE)
    query = load_query(TransactionsQuerySchema())
    if query["group_by"] == "job":
        page = _reports().transactions_by_job(claims.user_id, query["page"], query["page_size"],
                                              _ledger_filter(query))
        return ok(page_json(page, job_line_json))
    page = _reports().transactions(claims.user_id, query["page"], query["page_size"], _ledger_filter(query))
    return ok(page_json(page, ledger_entry_json))


@bp.post("/api/users/credits/redeem")
@doc("Redeem a code for credits", auth="user", body=RedeemSchema, errors={
    404: "REDEEM_CODE_NOT_FOUND",
    409: "REDEEM_CODE_ALREADY_REDEEMED, REDEEM_CODE_EXPIRED, REDEEM_CODE_USED_UP, ACCOUNT_CLOSED"})
def redeem():
    claims = require_user()
    data = load_json(RedeemSchema())
    return ok(_redeem_codes().redeem(claims.user_id, data["code"]))


@bp.post("/api/admin/credits/grant")
@doc("Grant credits to a user", auth="admin", body=AdjustSchema,
     errors={404: "ACCOUNT_NOT_FOUND", 409: "IDEMPOTENCY_CONFLICT, ACCOUNT_CLOSED"})
def grant():
    admin = require_admin()
    data = load_json(AdjustSchema())
    balance = _adjustments().grant(data["user_id"], data["amount"], data["reason"], admin.user_id,
                               data["idempotency_key"])
    return ok(balance.to_dict())


@bp.post("/api/admin/credits/deduct")
@doc("Deduct credits from a user", auth="admin", body=AdjustSchema,
     errors={404: "ACCOUNT_NOT_FOUND", 409: "BALANCE_TOO_LOW, IDEMPOTENCY_CONFLICT, ACCOUNT_CLOSED"})
def deduct():
    admin = require_admin()
    data = load_json(AdjustSchema())
    balance = _adjustments().deduct(data["user_id"], data["amount"], data["reason"], admin.user_id,
                                data["idempotency_key"])
    return ok(balance.to_dict())


@bp.get("/api/admin/credits/accounts")
@doc("List credit accounts", auth="admin", query=AccountsQuerySchema)
def accounts():
    require_admin()
    query = load_query(AccountsQuerySchema())
    return ok(page_json(_reports().accounts(query["page"], query["page_size"], query["user_id"]), account_json))


@bp.get("/api/admin/credits/accounts/<id:user_id>/transactions")
@doc("A user's ledger", auth="admin", query=LedgerQuerySchema, errors={404: "ACCOUNT_NOT_FOUND"})
def account_transactions(user_id: int):
    require_admin()
    query = load_query(LedgerQuerySchema())
    page = _reports().account_transactions(user_id, query["page"], query["page_size"], _ledger_filter(query))
    return ok(page_json(page, admin_ledger_entry_json))


@bp.post("/api/admin/credits/redeem-codes")
@doc("Create a redeem code", auth="admin", body=RedeemCodeCreateSchema, status=201,
     errors={409: "REDEEM_CODE_EXISTS"})
def create_redeem_code():
    admin = require_admin()
    data = load_json(RedeemCodeCreateSchema())
    code = _redeem_codes().create(data["amount"], data["max_uses"], admin.user_id, data["code"],
                                  data["expires_at"], data["description"])
    return ok(redeem_code_json(code), 201)


@bp.get("/api/admin/credits/redeem-codes")
@doc("List redeem codes", auth="admin", query=PageQuerySchema)
def redeem_codes():
    require_admin()
    query = load_query(PageQuerySchema())
    return ok(page_json(_redeem_codes().list_codes(query["page"], query["page_size"]), redeem_code_json))


@bp.get("/api/admin/credits/redeem-codes/<code>/redemptions")
@doc("Who redeemed a code, newest first", auth="admin", query=PageQuerySchema, errors={404: "REDEEM_CODE_NOT_FOUND"})
def redemptions(code: str):
    require_admin()
    query = load_query(PageQuerySchema())
    return ok(page_json(_redeem_codes().redemptions(code, query["page"], query["page_size"]), redemption_json))


@bp.get("/openapi.json")
@doc("This service's OpenAPI description")
def openapi_spec():
    return spec_response("AIGC platform: credits")
