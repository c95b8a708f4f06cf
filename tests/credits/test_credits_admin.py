"""Administration: grants and deductions with reason and operator, the accounts list, any
user's ledger, and redeem codes from creation to every way a redemption can be refused."""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from services.credits.models import RedeemCode


def test_only_admins_reach_admin_routes(client, as_user, new_user_id):
    headers = as_user(new_user_id())
    for method, path, body in (("post", "/api/admin/credits/grant", {"userId": 1, "amount": 1, "reason": "r"}),
                               ("post", "/api/admin/credits/deduct", {"userId": 1, "amount": 1, "reason": "r"}),
                               ("get", "/api/admin/credits/accounts", None),
                               ("get", "/api/admin/credits/accounts/1/transactions", None),
                               ("post", "/api/admin/credits/redeem-codes", {"amount": 1, "maxUses": 1}),
                               ("get", "/api/admin/credits/redeem-codes", None)):
        response = getattr(client, method)(path, json=body, headers=headers)
        assert response.status_code == 403, path
        assert response.json["error"]["code"] == "ADMIN_REQUIRED"


def test_grant_and_deduct_record_reason_and_operator(credits, client, as_user, new_user_id):
    user_id, admin_id = new_user_id(), new_user_id()
    admin = as_user(admin_id, role="admin")
    credits.open_account(user_id)
    granted = client.post("/api/admin/credits/grant", json={"userId": user_id, "amount": 100, "reason": "contest prize"},
                          headers=admin)
    assert granted.status_code == 200
    assert granted.json["data"] == {"available": 600, "held": 0}
    deducted = client.post("/api/admin/credits/deduct", json={"userId": user_id, "amount": 50, "reason": "refund fraud"},
                           headers=admin)
    assert deducted.json["data"] == {"available": 550, "held": 0}
    too_much = client.post("/api/admin/credits/deduct", json={"userId": user_id, "amount": 551, "reason": "x"},
                           headers=admin)
    assert too_much.status_code == 409
    assert too_much.json["error"]["code"] == "BALANCE_TOO_LOW"
    assert too_much.json["error"]["details"] == {"available": 550, "requested": 551}

    ledger = client.get(f"/api/admin/credits/accounts/{user_id}/transactions", headers=admin).json["data"]
    rows = [(r["type"], r["amount"], r["balanceBefore"], r["balanceAfter"], r["description"]) for r in ledger["items"]]
    assert rows == [("admin_deduct", -50, 600, 550, "refund fraud"), ("admin_grant", 100, 500, 600, "contest prize"),
                    ("signup_bonus", 500, 0, 500, "Signup bonus")]
    assert [r["operatorId"] for r in ledger["items"]] == [admin_id, admin_id, None]
    assert client.get("/api/users/credits/stats", headers=as_user(user_id)).json["data"]["spent"] == 50


def test_an_admin_adjustment_with_a_key_applies_once(client, credits, admin, new_user_id):
    user_id = new_user_id()
    credits.open_account(user_id)
    body = {"userId": user_id, "amount": 70, "reason": "double click", "idempotencyKey": uuid.uuid4().hex}
    first = client.post("/api/admin/credits/grant", json=body, headers=admin)
    second = client.post("/api/admin/credits/grant", json=body, headers=admin)
    assert first.json == second.json == {"success": True, "data": {"available": 570, "held": 0}}
    changed = client.post("/api/admin/credits/grant", json={**body, "amount": 71}, headers=admin)
    assert changed.status_code == 409
    assert changed.json["error"]["code"] == "IDEMPOTENCY_CONFLICT"


@pytest.mark.parametrize("body", [
    {"userId": 1, "amount": 5}, {"userId": 1, "amount": 5, "reason": ""}, {"userId": 1, "amount": 0, "reason": "r"},
    {"userId": 1, "amount": -5, "reason": "r"}, {"userId": 1, "amount": 5.5, "reason": "r"},
    {"userId": 1, "amount": "5", "reason": "r"}, {"userId": 1, "amount": 10**12, "reason": "r"},
    {"userId": "1", "amount": 5, "reason": "r"}, {"amount": 5, "reason": "r"},
])
@pytest.mark.parametrize("path", ["/api/admin/credits/grant", "/api/admin/credits/deduct"])
def test_bad_adjustments_are_422(client, admin, body, path):
    response = client.post(path, json=body, headers=admin)
    assert response.status_code == 422
    assert response.json["error"]["code"] == "VALIDATION_ERROR"


def test_adjusting_an_unknown_user_is_404(client, admin, new_user_id):
    user_id = new_user_id()
    for path in ("/api/admin/credits/grant", "/api/admin/credits/deduct"):
        response = client.post(path, json={"userId": user_id, "amount": 5, "reason": "r"}, headers=admin)
        assert response.status_code == 404
        assert response.json["error"]["code"] == "ACCOUNT_NOT_FOUND"
    ledger = client.get(f"/api/admin/credits/accounts/{user_id}/transactions", headers=admin)
    assert ledger.status_code == 404
    assert client.get("/api/admin/credits/accounts", query_string={"userId": user_id},
                      headers=admin).json["data"]["total"] == 0


def test_accounts_are_listed_with_balances_and_searchable(credits, client, admin, new_user_id):
    user_id = new_user_id()
    credits.open_account(user_id)
    found = client.get("/api/admin/credits/accounts", query_string={"userId": user_id}, headers=admin).json["data"]
    assert found["total"] == 1
    account = found["items"][0]
    assert {k: account[k] for k in ("userId", "available", "held", "lifetimeEarned", "lifetimeSpent")} == {
        "userId": user_id, "available": 500, "held": 0, "lifetimeEarned": 500, "lifetimeSpent": 0}
    page = client.get("/api/admin/credits/accounts?pageSize=2", headers=admin).json["data"]
    assert len(page["items"]) == 2 and page["total"] >= 2
    assert client.get("/api/admin/credits/accounts?pageSize=1000", headers=admin).status_code == 422


def redeem(client, as_user, user_id, code):
    return client.post("/api/users/credits/redeem", json={"code": code}, headers=as_user(user_id))


def test_a_code_is_redeemed_once_per_user_up_to_its_uses(client, as_user, admin, new_user_id):
    code = f"GIFT-{uuid.uuid4().hex[:8]}"
    created = client.post("/api/admin/credits/redeem-codes", headers=admin,
                          json={"code": code, "amount": 200, "maxUses": 2, "description": "launch gift"})
    assert created.status_code == 201
    assert created.json["data"]["code"] == code.upper()
    assert (created.json["data"]["uses"], created.json["data"]["maxUses"]) == (0, 2)
    duplicate = client.post("/api/admin/credits/redeem-codes", headers=admin,
                            json={"code": code.lower(), "amount": 5, "maxUses": 1})
    assert duplicate.status_code == 409 and duplicate.json["error"]["code"] == "REDEEM_CODE_EXISTS"

    first, second, third = new_user_id(), new_user_id(), new_user_id()
    ok = redeem(client, as_user, first, code.lower())
    assert ok.status_code == 200
    assert ok.json["data"] == {"code": code.upper(), "amount": 200, "available": 700, "held": 0}
    twice = redeem(client, as_user, first, code)
    assert twice.status_code == 409 and twice.json["error"]["code"] == "REDEEM_CODE_ALREADY_REDEEMED"
    assert redeem(client, as_user, second, code).status_code == 200
    used_up = redeem(client, as_user, third, code)
    assert used_up.status_code == 409 and used_up.json["error"]["code"] == "REDEEM_CODE_USED_UP"
    assert client.get("/api/users/credits", headers=as_user(third)).json["data"] == {"available": 500, "held": 0}
    top = client.get("/api/users/credits/transactions", headers=as_user(first)).json["data"]["items"][0]
    assert (top["type"], top["amount"], top["reference"], top["description"]) == ("redeem", 200, code.upper(),
                                                                                  "launch gift")


def test_generated_expired_and_unknown_codes(credits, client, as_user, admin, new_user_id):
    generated = client.post("/api/admin/credits/redeem-codes", headers=admin, json={
        "amount": 10, "maxUses": 5, "expiresAt": (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()})
    assert generated.status_code == 201
    code = generated.json["data"]["code"]
    assert len(code) == 14 and generated.json["data"]["expiresAt"].endswith("Z")
    with credits.db.transaction() as session:
        session.execute(update(RedeemCode).where(RedeemCode.code == code)
                        .values(expires_at=datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=1)))
    expired = redeem(client, as_user, new_user_id(), code)
    assert expired.status_code == 410 and expired.json["error"]["code"] == "REDEEM_CODE_EXPIRED"
    unknown = redeem(client, as_user, new_user_id(), "NOPE-NOPE-NOPE")
    assert unknown.status_code == 404 and unknown.json["error"]["code"] == "REDEEM_CODE_NOT_FOUND"
    malformed = redeem(client, as_user, new_user_id(), "a b")
    assert malformed.status_code == 422
    past = client.post("/api/admin/credits/redeem-codes", headers=admin,
                       json={"amount": 10, "maxUses": 1, "expiresAt": "2000-01-01T00:00:00Z"})
    assert past.status_code == 422
    naive = client.post("/api/admin/credits/redeem-codes", headers=admin,
                        json={"amount": 10, "maxUses": 1, "expiresAt": "2999-01-01T00:00:00"})
    assert naive.status_code == 422
    listed = client.get("/api/admin/credits/redeem-codes?pageSize=100", headers=admin).json["data"]
    assert code in {item["code"] for item in listed["items"]}


def test_parallel_redeems_by_one_user_credit_once(credits_app, credits, redeem_codes, as_user, admin, new_user_id):
    code = redeem_codes.create(amount=50, max_uses=100, operator_id=1).code
    user_id = new_user_id()
    credits.open_account(user_id)

    def attempt(_index: int) -> int:
        return redeem(credits_app.test_client(), as_user, user_id, code).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(attempt, range(8)))
    assert statuses == [200] + [409] * 7
    assert credits.balance(user_id).available == 550
    with credits.db.read() as session:
        assert session.get(RedeemCode, code).uses == 1


def test_a_grant_notifies_the_user_through_the_gallery(client, credits, admin, fake_peers, new_user_id):
    user_id = 2**30 + new_user_id() % 2**30  # the gallery takes 32-bit user ids
    credits.open_account(user_id)
    key = uuid.uuid4().hex
    body = {"userId": user_id, "amount": 40, "reason": "contest prize", "idempotencyKey": key}
    assert client.post("/api/admin/credits/grant", json=body, headers=admin).status_code == 200
    assert client.post("/api/admin/credits/grant", json=body, headers=admin).status_code == 200  # a replay
    client.post("/api/admin/credits/deduct", json={**body, "idempotencyKey": None}, headers=admin)
    sent = [note for note in fake_peers.notifications if note["userId"] == user_id]
    assert sent == [{"userId": user_id, "type": "credits.granted", "title": "获得积分 / Credits granted",
                     "body": "40 credits: contest prize", "data": {"amount": 40, "reason": "contest prize"},
                     "dedupeKey": f"admin_grant:{key}"}]

    long_key = "k" * 150  # the ledger key outgrows the gallery's 128: it is digested, still per grant
    client.post("/api/admin/credits/grant", json={**body, "idempotencyKey": long_key}, headers=admin)
    [note] = [note for note in fake_peers.notifications if note["userId"] == user_id][1:]
    assert note["dedupeKey"].startswith("admin_grant:sha256:") and len(note["dedupeKey"]) <= 128


def test_a_grant_stands_when_the_gallery_is_down(settings_env, as_user, new_user_id, caplog):
    from shared.config import load_settings
    from shared.embedded import free_port
    from services.credits.app import create_app

    app = create_app(load_settings({**settings_env, "GALLERY_URL": f"http://127.0.0.1:{free_port()}"}))
    try:
        user_id = new_user_id()
        app.extensions["credits"].open_account(user_id)
        granted = app.test_client().post("/api/admin/credits/grant", headers=as_user(new_user_id(), role="admin"),
                                         json={"userId": user_id, "amount": 25, "reason": "sorry"})
        assert granted.status_code == 200
        assert granted.json["data"] == {"available": 525, "held": 0}
    finally:
        app.extensions["db"].dispose()
    assert any(record.levelname == "WARNING" and "GALLERY_UNAVAILABLE" in record.getMessage()
               for record in caplog.records)


def test_an_account_id_beyond_64_bits_is_404_not_500(client, admin):
    response = client.get("/api/admin/credits/accounts/9223372036854775808/transactions", headers=admin)
    assert response.status_code == 404
