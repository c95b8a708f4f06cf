"""The user-facing routes, the admin grant, the guard and the error envelope."""
from __future__ import annotations

import json
import time

import pytest
import redis
from sqlalchemy import select

from shared.events import user_channel
from services.credits.models import CreditLedger


def bearer(service_headers, issue_token, user_id, role="user"):
    return {**service_headers, "Authorization": f"Bearer {issue_token(user_id, f'u{user_id}', role)}"}


def test_balance_opens_the_account_lazily(client, service_headers, issue_token, new_user_id):
    user_id = new_user_id()
    headers = bearer(service_headers, issue_token, user_id)
    first = client.get("/api/users/credits", headers=headers)
    second = client.get("/api/users/credits", headers=headers)
    assert first.status_code == 200
    assert first.json == second.json == {"success": True, "data": {"available": 500, "held": 0}}


def test_transactions_are_paged_newest_first_and_filtered(client, service_headers, issue_token, new_user_id, job_id):
    user_id = new_user_id()
    for index in range(3):
        client.post("/internal/holds", headers=service_headers,
                    json={"userId": user_id, "jobId": f"{job_id}-{index}", "amount": 15})
    headers = bearer(service_headers, issue_token, user_id)

    page = client.get("/api/users/credits/transactions?page=1&pageSize=2", headers=headers).json["data"]
    assert (page["page"], page["pageSize"], page["total"]) == (1, 2, 4)
    assert [item["reference"] for item in page["items"]] == [f"{job_id}-2", f"{job_id}-1"]
    assert set(page["items"][0]) == {"id", "type", "amount", "heldChange", "balanceBefore", "balanceAfter",
                                     "reference", "description", "createdAt"}
    last = client.get("/api/users/credits/transactions?page=2&pageSize=2", headers=headers).json["data"]
    assert [item["type"] for item in last["items"]] == ["hold", "signup_bonus"]
    holds = client.get("/api/users/credits/transactions?type=hold", headers=headers).json["data"]
    assert holds["total"] == 3


@pytest.mark.parametrize("query", ["pageSize=0", "pageSize=101", "page=0", "page=x", "type=gift", "extra=1"])
def test_bad_transaction_queries_are_422(client, service_headers, issue_token, new_user_id, query):
    response = client.get(f"/api/users/credits/transactions?{query}",
                          headers=bearer(service_headers, issue_token, new_user_id()))
    assert response.status_code == 422
    assert response.json["success"] is False
    assert response.json["error"]["code"] == "VALIDATION_ERROR"


def test_user_routes_need_a_token(client, service_headers):
    for path in ("/api/users/credits", "/api/users/credits/transactions"):
        response = client.get(path, headers=service_headers)
        assert response.status_code == 401
        assert response.json["error"]["code"] == "NO_TOKEN"
    forged = client.get("/api/users/credits", headers={**service_headers, "Authorization": "Bearer nope"})
    assert forged.status_code == 401
    assert forged.json["error"]["code"] == "TOKEN_INVALID"


def test_every_route_needs_the_service_token(client, issue_token, new_user_id):
    user_id = new_user_id()
    calls = [("post", "/internal/accounts", {"userId": user_id}),
             ("post", "/internal/holds", {"userId": user_id, "jobId": "j", "amount": 15}),
             ("post", "/internal/holds/j/capture", {"amount": 15, "idempotencyKey": "k"}),
             ("post", "/internal/holds/j/release", {"idempotencyKey": "k"}),
             ("get", "/api/users/credits", None)]
    for method, path, body in calls:
        response = getattr(client, method)(path, json=body, headers={
            "Authorization": f"Bearer {issue_token(user_id, 'x')}", "X-Service-Token": "wrong"})
        assert response.status_code == 403
        assert response.json["error"]["code"] == "SERVICE_TOKEN_REQUIRED"
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json["data"]["components"] == {"database": "ok", "redis": "ok"}


@pytest.mark.parametrize("body", [
    {"userId": 1, "jobId": "j", "amount": "15"},
    {"userId": 1, "jobId": "j", "amount": 15.0},
    {"userId": 1, "jobId": "j", "amount": 0},
    {"userId": 1, "jobId": "j", "amount": -15},
    {"userId": "1", "jobId": "j", "amount": 15},
    {"userId": 1, "jobId": "", "amount": 15},
    {"userId": 1, "jobId": "j", "amount": 15, "price": 1},
    {"jobId": "j", "amount": 15},
])
def test_bad_hold_bodies_are_422(client, service_headers, body):
    response = client.post("/internal/holds", json=body, headers=service_headers)
    assert response.status_code == 422
    assert response.json["error"]["code"] == "VALIDATION_ERROR"
    assert response.json["error"]["details"]


def test_non_json_body_is_400(client, service_headers):
    response = client.post("/internal/accounts", data="userId=1", headers=service_headers,
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert response.json["error"]["code"] == "INVALID_JSON"


def test_admin_grants_credits_with_an_operator(client, service_headers, issue_token, new_user_id):
    user_id, admin_id = new_user_id(), new_user_id()
    body = {"userId": user_id, "amount": 100, "reason": "contest prize"}
    denied = client.post("/api/admin/credits/grant", json=body, headers=bearer(service_headers, issue_token, user_id))
    assert denied.status_code == 403
    assert denied.json["error"]["code"] == "ADMIN_REQUIRED"

    admin = bearer(service_headers, issue_token, admin_id, role="admin")
    granted = client.post("/api/admin/credits/grant", json=body, headers=admin)
    assert granted.status_code == 200
    assert granted.json["data"] == {"available": 600, "held": 0}
    missing_reason = client.post("/api/admin/credits/grant", json={"userId": user_id, "amount": 5}, headers=admin)
    assert missing_reason.status_code == 422

    top = client.get("/api/users/credits/transactions",
                     headers=bearer(service_headers, issue_token, user_id)).json["data"]["items"][0]
    assert (top["type"], top["amount"], top["balanceBefore"], top["balanceAfter"], top["description"]) == (
        "admin_grant", 100, 500, 600, "contest prize")
    with client.application.extensions["db"].transaction() as session:
        operator = session.scalar(select(CreditLedger.operator_id).where(CreditLedger.id == top["id"]))
    assert operator == admin_id


def test_credits_changed_is_published_after_each_movement(client, service_headers, redis_url, new_user_id, job_id):
    user_id = new_user_id()
    pubsub = redis.Redis.from_url(redis_url, decode_responses=True).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(user_channel(user_id))
    try:
        pubsub.get_message(timeout=1.0)  # the subscribe confirmation
        client.post("/internal/holds", json={"userId": user_id, "jobId": job_id, "amount": 15},
                    headers=service_headers)
        events, deadline = [], time.monotonic() + 5
        while len(events) < 2 and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            if message:
                events.append(json.loads(message["data"]))
    finally:
        pubsub.close()
    assert [(e["type"], e["data"]) for e in events] == [
        ("credits.changed", {"available": 500, "held": 0}),
        ("credits.changed", {"available": 485, "held": 15})]
