"""Routes of the integrations service (reached through the gateway): service accounts
(administrators), the queue API's dead letters (administrators), webhooks (users, API tokens
with the scope ``webhooks``, administrators for service accounts), and the internal limits
lookup."""
from __future__ import annotations

from flask import Blueprint, current_app, request

from shared.errors import ok
from shared.openapi import doc, spec_response
from shared.tokens import bearer_token, require_admin, require_user
from shared.web import load_json, load_query
from services.integrations.endpoints import WebhookEndpoints
from services.integrations.request_log import RequestLog
from services.integrations.schemas import (BudgetSchema, PageQuerySchema, RotateKeySchema, ServiceAccountCreateSchema,
                                           ServiceAccountUpdateSchema, WebhookCreateSchema, WebhookOwnerQuerySchema)
from services.integrations.service import ServiceAccounts

bp = Blueprint("integrations", __name__)
WEBHOOKS_SCOPE = "webhooks"


def _accounts() -> ServiceAccounts:
    return current_app.extensions["integrations"]


def _webhooks() -> WebhookEndpoints:
    return current_app.extensions["integrations_webhooks"]


def _requests() -> RequestLog:
    return current_app.extensions["integrations_requests"]


@bp.get("/api/admin/service-accounts")
@doc("Service accounts with their usage (queue requests) and spend (credits)", auth="admin", query=PageQuerySchema)
def list_service_accounts():
    require_admin()
    query = load_query(PageQuerySchema())
    return ok(_accounts().list_accounts(bearer_token(), query["page"], query["page_size"]))


@bp.post("/api/admin/service-accounts")
@doc("Create a service account; its queue credentials are in the answer, once", auth="admin",
     body=ServiceAccountCreateSchema, status=201,
     errors={409: "SERVICE_ACCOUNT_EXISTS, USERNAME_TAKEN", 422: "OWNER_NOT_FOUND"},
     description="The account gets a credits account without signup bonus and `budget` credits granted "
                 "(ledger admin_grant). Create its API tokens with POST /api/tokens {userId}.")
def create_service_account():
    admin = require_admin()
    data = load_json(ServiceAccountCreateSchema())
    return ok(_accounts().create(admin, bearer_token(), data), 201)


@bp.get("/api/admin/service-accounts/<id:user_id>")
@doc("One service account", auth="admin", errors={404: "SERVICE_ACCOUNT_NOT_FOUND"})
def get_service_account(user_id: int):
    require_admin()
    return ok({"serviceAccount": _accounts().get(bearer_token(), user_id)})


@bp.put("/api/admin/service-accounts/<id:user_id>")
@doc("Change a service account's limits or pause it (isActive false: its queue is not read)", auth="admin",
     body=ServiceAccountUpdateSchema, errors={404: "SERVICE_ACCOUNT_NOT_FOUND"})
def update_service_account(user_id: int):
    require_admin()
    changes = load_json(ServiceAccountUpdateSchema())
    return ok({"serviceAccount": _accounts().update(bearer_token(), user_id, changes)})


@bp.post("/api/admin/service-accounts/<id:user_id>/key")
@doc("Rotate the queue signing key: the new secret is shown once; the old key stops at once, or "
     "after graceSeconds (at most a week) so the service can switch without a dead letter",
     auth="admin", body=RotateKeySchema, errors={404: "SERVICE_ACCOUNT_NOT_FOUND"})
def rotate_service_account_key(user_id: int):
    require_admin()
    options = load_json(RotateKeySchema()) if request.get_data() else RotateKeySchema().load({})
    return ok(_accounts().rotate_key(user_id, options["grace_seconds"]))


@bp.post("/api/admin/service-accounts/<id:user_id>/budget")
@doc("Add credits to a service account's budget (ledger admin_grant)", auth="admin", body=BudgetSchema,
     errors={404: "SERVICE_ACCOUNT_NOT_FOUND", 409: "IDEMPOTENCY_CONFLICT, ACCOUNT_CLOSED"})
def grant_budget(user_id: int):
    require_admin()
    data = load_json(BudgetSchema())
    return ok(_accounts().grant(bearer_token(), user_id, data["amount"], data["reason"], data["idempotency_key"]))


@bp.get("/api/admin/queue-api/dead-letters")
@doc("Dead letters of the queue API: counts by reason and the latest ones", auth="admin", query=PageQuerySchema)
def dead_letters():
    require_admin()
    query = load_query(PageQuerySchema())
    return ok(_requests().dead_letters(query["page"], query["page_size"]))


@bp.get("/api/webhooks")
@doc("The caller's webhooks (an administrator may name a service account with userId)", auth="user",
     scope=WEBHOOKS_SCOPE, query=WebhookOwnerQuerySchema, errors={403: "INSUFFICIENT_SCOPE, ADMIN_REQUIRED, NOT_A_SERVICE_ACCOUNT"})
def list_webhooks():
    claims = require_user(scope=WEBHOOKS_SCOPE)
    return ok(_webhooks().list_endpoints(claims, load_query(WebhookOwnerQuerySchema())["user_id"]))


@bp.post("/api/webhooks")
@doc("Register a webhook for job.succeeded, job.failed, job.cancelled or credits.low (secret shown once)",
     auth="user", scope=WEBHOOKS_SCOPE, body=WebhookCreateSchema, status=201,
     errors={403: "INSUFFICIENT_SCOPE, ADMIN_REQUIRED, NOT_A_SERVICE_ACCOUNT", 409: "WEBHOOK_LIMIT",
             422: "WEBHOOK_URL_REFUSED"},
     description="Deliveries are POSTed with X-Webhook-Id, X-Webhook-Event, X-Webhook-Key-Id and "
                 "X-Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, '<t>.' + body)>; retried "
                 "with exponential back-off for a day until a 2xx answer. Delivered at least once: dedupe on the "
                 "body's id (a job's outcome: `<type>:<jobId>`, the same on every retry and every repeat, and the "
                 "eventId of its live event). Loopback and private addresses are refused unless the operator "
                 "allows them (WEBHOOK_ALLOW_PRIVATE).")
def create_webhook():
    claims = require_user(scope=WEBHOOKS_SCOPE)
    data = load_json(WebhookCreateSchema())
    return ok(_webhooks().register(claims, data["user_id"], data["url"], data["events"], data["description"]), 201)


@bp.delete("/api/webhooks/<id:webhook_id>")
@doc("Delete a webhook (its pending deliveries are given up)", auth="user", scope=WEBHOOKS_SCOPE,
     errors={403: "INSUFFICIENT_SCOPE", 404: "WEBHOOK_NOT_FOUND"})
def delete_webhook(webhook_id: int):
    claims = require_user(scope=WEBHOOKS_SCOPE)
    return ok({"webhook": _webhooks().delete(claims, webhook_id)})


@bp.get("/api/webhooks/<id:webhook_id>/deliveries")
@doc("A webhook's deliveries, newest first: status, attempts, last answer or error", auth="user", scope=WEBHOOKS_SCOPE,
     query=PageQuerySchema, errors={403: "INSUFFICIENT_SCOPE", 404: "WEBHOOK_NOT_FOUND"})
def webhook_deliveries(webhook_id: int):
    claims = require_user(scope=WEBHOOKS_SCOPE)
    query = load_query(PageQuerySchema())
    return ok(_webhooks().deliveries(claims, webhook_id, query["page"], query["page_size"]))


@bp.post("/api/webhooks/<id:webhook_id>/deliveries/<delivery_id>/redeliver")
@doc("Send a delivery again now", auth="user", scope=WEBHOOKS_SCOPE,
     errors={403: "INSUFFICIENT_SCOPE", 404: "WEBHOOK_NOT_FOUND, DELIVERY_NOT_FOUND"})
def redeliver(webhook_id: int, delivery_id: str):
    claims = require_user(scope=WEBHOOKS_SCOPE)
    return ok({"delivery": _webhooks().redeliver(claims, webhook_id, delivery_id)})


@bp.get("/internal/service-accounts/<id:user_id>/limits")
@doc("A service account's admission limits (for the render API)", errors={404: "SERVICE_ACCOUNT_NOT_FOUND"})
def account_limits(user_id: int):
    return ok(_accounts().limits(user_id))


@bp.get("/openapi.json")
@doc("This service's OpenAPI description")
def openapi_spec():
    return spec_response("AIGC platform: integrations")
