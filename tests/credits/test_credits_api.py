"""The user-facing routes (balance, stats, ledger), the guard and the error envelope."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
import redis
from sqlalchemy import insert, update

from shared.events import redis_db, user_channel
from services.credits.models import CreditAccount, CreditLedger


def hold(client, service_headers, user_id, job_id, images=1):
    response = client.post("/internal/holds", headers=service_headers,
                           json={"userId": user_id, "jobId": job_id, "workflow": "text2img", "images": images})
    assert response.status_code == 201, response.json
    return response.json["data"]


def test_balance_opens_the_account_lazily(client, as_user, new_user_id):
    headers = as_user(new_user_id())
    first = client.get("/api/users/credits", headers=headers)
    second = client.get("/api/users/credits", headers=headers)
    assert first.status_code == 200
    assert first.json == second.json == {"success": True, "data": {"available": 500, "held": 0}}


def test_transactions_are_paged_newest_first_and_filtered(client, service_headers, as_user, new_user_id, job_id):
    user_id = new_user_id()
    for index in range(3):
        hold(client, service_headers, user_id, f"{job_id}-{index}")
    headers = as_user(user_id)

    page = client.get("/api/users/credits/transactions?page=1&pageSize=2", headers=headers).json["data"]
    assert (page["page"], page["pageSize"], page["total"]) == (1, 2, 4)
    assert [item["reference"] for item in page["items"]] == [f"{job_id}-2", f"{job_id}-1"]
    assert set(page["items"][0]) == {"id", "type", "amount", "heldChange", "balanceBefore", "balanceAfter",
                                     "reference", "description", "createdAt"}
    last = client.get("/api/users/credits/transactions?page=2&pageSize=2", headers=headers).json["data"]
    assert [item["type"] for item in last["items"]] == ["hold", "signup_bonus"]
    holds = client.get("/api/users/credits/transactions?type=hold", headers=headers).json["data"]
    assert holds["total"] == 3


def test_transactions_filter_by_local_date(credits, client, as_user, new_user_id):
    """Dates are calendar days in the configured zone (Asia/Shanghai, UTC+8): a row at
    2025-03-01 17:00 UTC belongs to 2 March there."""
    user_id = new_user_id()
    credits.open_account(user_id)
    with credits.db.transaction() as session:
        for day, hour in ((1, 15), (1, 17), (2, 12)):  # local: 1 Mar 23:00, 2 Mar 01:00, 2 Mar 20:00
            session.execute(insert(CreditLedger).values(
                user_id=user_id, type="admin_grant", amount=0, held_change=0, balance_before=500, balance_after=500,
                description=f"{day}/{hour}", idempotency_key=f"test:{user_id}:{day}:{hour}",
                created_at=datetime(2025, 3, day, hour)))
    headers = as_user(user_id)
    march_2 = client.get("/api/users/credits/transactions?from=2025-03-02&to=2025-03-02", headers=headers).json["data"]
    assert [item["description"] for item in march_2["items"]] == ["2/12", "1/17"]
    until_1 = client.get("/api/users/credits/transactions?to=2025-03-01", headers=headers).json["data"]
    assert [item["description"] for item in until_1["items"]] == ["1/15"]


@pytest.mark.parametrize("query", ["pageSize=0", "pageSize=101", "page=0", "page=x", "type=gift", "extra=1",
                                   "from=yesterday", "from=2025-03-02&to=2025-03-01"])
def test_bad_transaction_queries_are_422(client, as_user, new_user_id, query):
    response = client.get(f"/api/users/credits/transactions?{query}", headers=as_user(new_user_id()))
    assert response.status_code == 422
    assert response.json["success"] is False
    assert response.json["error"]["code"] == "VALIDATION_ERROR"


def test_stats_show_lifetime_totals_and_this_months_spend(adjustments, client, service_headers, as_user,
                                                          new_user_id, job_id):
    user_id = new_user_id()
    hold(client, service_headers, user_id, job_id, images=3)
    for index in range(2):
        client.post(f"/internal/holds/{job_id}/capture", headers=service_headers,
                    json={"idempotencyKey": f"capture:{job_id}:{index}"})
    adjustments.deduct(user_id, 5, "chargeback", operator_id=1)
    stats = client.get("/api/users/credits/stats", headers=as_user(user_id))
    assert stats.status_code == 200
    month = datetime.now(timezone(timedelta(hours=8))).strftime("%Y-%m")
    assert stats.json["data"] == {"available": 450, "held": 15, "earned": 500, "spent": 35, "spentThisMonth": 35,
                                  "month": month, "timezone": "Asia/Shanghai"}


def test_this_months_spend_starts_at_local_midnight(credits, reports, new_user_id):
    """A deduction at 31 Jan 17:00 UTC is 1 Feb 01:00 in Shanghai: February's spend."""
    user_id = new_user_id()
    credits.open_account(user_id)
    with credits.db.transaction() as session:
        for before, hour in ((500, 15), (485, 17)):  # a consistent ledger: the audit stays clean
            session.execute(insert(CreditLedger).values(
                user_id=user_id, type="admin_deduct", amount=-15, held_change=0, balance_before=before,
                balance_after=before - 15, idempotency_key=f"test:{user_id}:{hour}", description="",
                created_at=datetime(2025, 1, 31, hour)))
        session.execute(update(CreditAccount).where(CreditAccount.user_id == user_id)
                        .values(available=470, lifetime_spent=30))
    stats = reports.stats(user_id, now=datetime(2025, 2, 10, tzinfo=timezone.utc))
    assert (stats["month"], stats["spentThisMonth"], stats["spent"]) == ("2025-02", 15, 30)


def test_user_routes_need_a_token(client, service_headers):
    for method, path in (("get", "/api/users/credits"), ("get", "/api/users/credits/transactions"),
                         ("get", "/api/users/credits/stats"), ("post", "/api/users/credits/redeem")):
        response = getattr(client, method)(path, headers=service_headers, json={"code": "ABCD"})
        assert response.status_code == 401
        assert response.json["error"]["code"] == "NO_TOKEN"
    forged = client.get("/api/users/credits", headers={**service_headers, "Authorization": "Bearer nope"})
    assert forged.status_code == 401
    assert forged.json["error"]["code"] == "TOKEN_INVALID"


def test_every_route_needs_the_service_token(client, issue_token, new_user_id):
    user_id = new_user_id()
    calls = [("post", "/internal/accounts", {"userId": user_id}),
             ("post", "/internal/holds", {"userId": user_id, "jobId": "j", "workflow": "text2img", "images": 1}),
             ("post", "/internal/holds/j/capture", {"idempotencyKey": "k"}),
             ("post", "/internal/holds/j/release", {"idempotencyKey": "k"}),
             ("get", "/api/users/credits", None),
             ("get", "/api/credits/pricing", None),
             ("get", "/api/admin/credits/accounts", None)]
    for method, path, body in calls:
        response = getattr(client, method)(path, json=body, headers={
            "Authorization": f"Bearer {issue_token(user_id, 'x', 'admin')}", "X-Service-Token": "wrong"})
        assert response.status_code == 403
        assert response.json["error"]["code"] == "SERVICE_TOKEN_REQUIRED"
        # A header may carry any Latin-1 character: still a wrong token, never a 500.
        response = getattr(client, method)(path, json=body, headers={"X-Service-Token": "wr\u00f6ng"})
        assert (response.status_code, response.json["error"]["code"]) == (403, "SERVICE_TOKEN_REQUIRED")
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json["data"]["components"] == {"database": "ok", "redis": "ok"}


HOLD = {"userId": 1, "jobId": "j", "workflow": "text2img", "images": 1}


@pytest.mark.parametrize("change", [
    {"images": "1"}, {"images": 1.0}, {"images": 1.5}, {"images": 0}, {"images": -1}, {"images": 17},
    {"images": 10**30}, {"userId": "1"}, {"userId": 0}, {"userId": 2**64}, {"jobId": ""}, {"jobId": "x" * 65},
    {"workflow": ""}, {"workflow": 15}, {"expectedCost": "15"}, {"expectedCost": 0}, {"expectedCost": 15.5},
    {"amount": 15}, {"price": 1}, {"images": None}, {"images": True},
])
def test_bad_hold_bodies_are_422(client, service_headers, change):
    body = {key: value for key, value in {**HOLD, **change}.items() if value is not None}
    response = client.post("/internal/holds", json=body, headers=service_headers)
    assert response.status_code == 422
    assert response.json["error"]["code"] == "VALIDATION_ERROR"
    assert response.json["error"]["details"]


@pytest.mark.parametrize("change", [
    {"images": "1"}, {"images": 1.0}, {"images": 0.5}, {"images": 0}, {"images": -1}, {"images": 17},
    {"images": 2**63}, {"images": None}, {"images": True}, {"images": [1]}, {"idempotencyKey": ""},
    {"amount": 15},  # the worker no longer says what to charge: credits prices the images
])
def test_bad_capture_bodies_are_422(client, service_headers, change):
    response = client.post("/internal/holds/j/capture", json={"idempotencyKey": "k", **change},
                           headers=service_headers)
    assert response.status_code == 422
    assert response.json["error"]["code"] == "VALIDATION_ERROR"


def test_non_json_body_is_400(client, service_headers):
    response = client.post("/internal/accounts", data="userId=1", headers=service_headers,
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert response.json["error"]["code"] == "INVALID_JSON"


def test_credits_changed_is_published_after_each_movement(client, service_headers, redis_url, new_user_id, job_id):
    user_id = new_user_id()
    listener = redis.Redis.from_url(redis_url, decode_responses=True)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(user_channel(user_id, redis_db(listener)))
    try:
        pubsub.get_message(timeout=1.0)  # the subscribe confirmation
        hold(client, service_headers, user_id, job_id)
        client.post(f"/internal/holds/{job_id}/release", json={"idempotencyKey": "r"}, headers=service_headers)
        events, deadline = [], time.monotonic() + 5
        while len(events) < 3 and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            if message:
                events.append(json.loads(message["data"]))
    finally:
        pubsub.close()
    assert [(e["type"], e["data"]) for e in events] == [
        ("credits.changed", {"available": 500, "held": 0}),
        ("credits.changed", {"available": 485, "held": 15}),
        ("credits.changed", {"available": 500, "held": 0})]
