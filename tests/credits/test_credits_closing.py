"""Closing the account of a deleted user: announced on platform:events, consumed by the
``credits`` group; open holds go back, the ledger stays, nothing moves the account again."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from shared.db import Database
from shared.errors import ServiceError
from shared.events import EventBus, GroupConsumer, redis_client
from shared.tokens import revoked_token_key, revoked_user_key
from services.credits import events
from services.credits.audit import audit
from services.credits.config import CreditsConfig
from services.credits.ledger import Ledger
from services.credits.models import CreditHold, CreditLedger
from services.credits.service import CreditsService


@pytest.fixture
def redis(redis_url):
    client = redis_client(redis_url)
    yield client
    client.close()


@pytest.fixture
def stream(unique) -> str:
    """A stream of this test's own: the real one also carries other tests' deletions."""
    return f"test:platform:{unique}"


def drain(consumer) -> int:
    total = 0
    while handled := consumer.consume_once(block_ms=50):
        total += handled
    return total


def hold(client, service_headers, user_id, job_id, images=2):
    response = client.post("/internal/holds", headers=service_headers,
                           json={"userId": user_id, "jobId": job_id, "workflow": "text2img", "images": images})
    assert response.status_code in (200, 201), response.json
    return response


def ledger_rows(credits, user_id):
    with credits.db.read() as session:
        return [(row.type, row.amount, row.held_change, row.idempotency_key) for row in session.scalars(
            select(CreditLedger).where(CreditLedger.user_id == user_id).order_by(CreditLedger.id))]


def test_user_deleted_releases_holds_closes_the_account_and_keeps_the_ledger(
        credits, client, service_headers, new_user_id, job_id, redis, stream):
    user_id, bystander = new_user_id(), new_user_id()
    running, half_done, finished = f"{job_id}-a", f"{job_id}-b", f"{job_id}-c"
    for job in (running, half_done, finished):
        hold(client, service_headers, user_id, job)
    client.post(f"/internal/holds/{half_done}/capture", headers=service_headers,
                json={"idempotencyKey": f"capture:{half_done}:0"})
    client.post(f"/internal/holds/{finished}/release", headers=service_headers,
                json={"idempotencyKey": f"release:{finished}"})
    credits.open_account(bystander)

    consumer = GroupConsumer(redis, events.GROUP, "test", events.handler(credits), stream)
    consumer.ensure_group()
    redis.xadd(stream, {"type": "user.created", "userId": str(user_id), "ts": "x"})
    redis.xadd(stream, {"type": "user.deleted", "userId": "not a number", "ts": "x"})
    redis.xadd(stream, {"type": "user.deleted", "userId": str(user_id), "ts": "x"})
    assert drain(consumer) == 3
    assert redis.xpending(stream, events.GROUP)["pending"] == 0

    assert credits.balance(user_id).to_dict() == {"available": 485, "held": 0}
    rows = ledger_rows(credits, user_id)
    assert rows[-2:] == [("release", 30, -30, f"close:{running}"), ("release", 15, -15, f"close:{half_done}")]
    assert len(rows) == 8  # bonus, 3 holds, capture, release, 2 closing releases: nothing removed
    with credits.db.read() as session:
        statuses = dict(session.execute(select(CreditHold.job_id, CreditHold.status)
                                        .where(CreditHold.user_id == user_id)).all())
    assert statuses == {running: "closed", half_done: "closed", finished: "settled"}
    assert [item for item in audit(credits.db) if item.user_id == user_id] == []
    assert credits.balance(bystander).to_dict() == {"available": 500, "held": 0}

    # Redelivery (or a second announcement) changes nothing.
    redis.xadd(stream, {"type": "user.deleted", "userId": str(user_id), "ts": "y"})
    assert drain(consumer) == 1
    again = credits.close_account(user_id)
    assert again.already_closed and again.released == {}
    assert ledger_rows(credits, user_id) == rows


def test_a_closed_account_refuses_every_movement(credits, client, service_headers, as_user, new_user_id, job_id):
    user_id = new_user_id()
    hold(client, service_headers, user_id, job_id)
    closed = credits.close_account(user_id)
    assert closed.released == {job_id: 30} and not closed.already_closed
    admin = as_user(new_user_id(), role="admin")

    refused = client.post("/internal/holds", headers=service_headers,
                          json={"userId": user_id, "jobId": f"{job_id}-new", "workflow": "text2img", "images": 1})
    assert (refused.status_code, refused.json["error"]["code"]) == (403, "ACCOUNT_CLOSED")
    assert refused.json["error"]["details"]["closedAt"].endswith("Z")
    opened = client.post("/internal/accounts", headers=service_headers, json={"userId": user_id})
    assert (opened.status_code, opened.json["error"]["code"]) == (409, "ACCOUNT_CLOSED")
    for path in ("/api/admin/credits/grant", "/api/admin/credits/deduct"):
        adjusted = client.post(path, headers=admin, json={"userId": user_id, "amount": 5, "reason": "r"})
        assert (adjusted.status_code, adjusted.json["error"]["code"]) == (409, "ACCOUNT_CLOSED")
    code = client.post("/api/admin/credits/redeem-codes", headers=admin, json={"amount": 10, "maxUses": 5})
    redeemed = client.post("/api/users/credits/redeem", headers=as_user(user_id),
                           json={"code": code.json["data"]["code"]})
    assert (redeemed.status_code, redeemed.json["error"]["code"]) == (409, "ACCOUNT_CLOSED")
    captured = client.post(f"/internal/holds/{job_id}/capture", headers=service_headers,
                           json={"idempotencyKey": f"capture:{job_id}:0"})
    assert (captured.status_code, captured.json["error"]["code"]) == (409, "HOLD_SETTLED")
    released = client.post(f"/internal/holds/{job_id}/release", headers=service_headers,
                           json={"idempotencyKey": f"release:{job_id}"})
    assert released.json["data"] == {"jobId": job_id, "released": 0, "remaining": 0}
    assert credits.grant_signup_bonuses([user_id]) == []

    assert credits.balance(user_id).to_dict() == {"available": 500, "held": 0}
    assert [row[0] for row in ledger_rows(credits, user_id)] == ["signup_bonus", "hold", "release"]
    listed = client.get("/api/admin/credits/accounts", query_string={"userId": user_id}, headers=admin)
    assert listed.json["data"]["items"][0]["closedAt"].endswith("Z")


def test_a_user_without_an_account_gets_a_closed_empty_one(credits, client, service_headers, new_user_id):
    user_id = new_user_id()
    closed = credits.close_account(user_id)
    assert (closed.released, closed.already_closed) == ({}, False)
    late = client.post("/internal/accounts", headers=service_headers, json={"userId": user_id})
    assert (late.status_code, late.json["error"]["code"]) == (409, "ACCOUNT_CLOSED")
    assert ledger_rows(credits, user_id) == []  # no signup bonus for a deleted user


def test_holds_racing_the_closing_are_released_or_refused(credits, new_user_id, job_id):
    """Whatever the interleaving, a closed account is left with nothing held."""
    users = [new_user_id() for _ in range(12)]
    for user_id in users:
        credits.open_account(user_id)

    def admit(user_id: int, index: int) -> str:
        try:
            credits.hold(user_id, f"{job_id}-{user_id}-{index}", "text2img", 1)
            return "held"
        except ServiceError as exc:
            return exc.code

    with ThreadPoolExecutor(8) as pool:
        calls = [pool.submit(admit, user_id, index) for user_id in users for index in range(2)]
        closings = [pool.submit(credits.close_account, user_id) for user_id in users]
        outcomes = {call.result() for call in calls}
        assert all(not closing.result().already_closed for closing in closings)
    assert outcomes <= {"held", "ACCOUNT_CLOSED"}
    with credits.db.read() as session:
        assert session.scalar(select(CreditHold.job_id).where(CreditHold.user_id.in_(users),
                                                              CreditHold.status == "open")) is None
    assert {credits.balance(user_id).to_dict()["held"] for user_id in users} == {0}
    assert [item for item in audit(credits.db) if item.user_id in users] == []


def test_an_entry_is_acknowledged_only_after_the_closing_committed(
        credits, settings, tmp_path, client, service_headers, new_user_id, job_id, redis, stream):
    user_id = new_user_id()
    hold(client, service_headers, user_id, job_id)
    unreachable = Database(f"sqlite:///{tmp_path / 'missing' / 'credits.db'}")
    broken = CreditsService(unreachable, Ledger(unreachable, EventBus(redis), CreditsConfig().signup_bonus),
                            CreditsConfig())
    failing = GroupConsumer(redis, events.GROUP, "worker-1", events.handler(broken), stream)
    failing.ensure_group()
    redis.xadd(stream, {"type": "user.deleted", "userId": str(user_id), "ts": "x"})
    with pytest.raises(OperationalError):
        failing.consume_once(block_ms=50)
    unreachable.dispose()
    assert redis.xpending(stream, events.GROUP)["pending"] == 1
    assert credits.balance(user_id).held == 30

    # The same consumer, its database back, handles its pending entry first.
    assert drain(GroupConsumer(redis, events.GROUP, "worker-1", events.handler(credits), stream)) == 1
    assert redis.xpending(stream, events.GROUP)["pending"] == 0
    assert credits.balance(user_id).to_dict() == {"available": 500, "held": 0}


def test_revoked_tokens_and_users_are_refused(client, as_user, new_user_id, redis):
    """Auth's revocation marks (a signed-out token, a deleted user) hold in credits too."""
    signed_out, deleted = new_user_id(), new_user_id()
    old_session, old_token = as_user(signed_out), as_user(deleted)
    for headers in (old_session, old_token):
        assert client.get("/api/users/credits", headers=headers).status_code == 200
    token = old_session["Authorization"].removeprefix("Bearer ")
    redis.set(revoked_token_key(jwt.decode(token, options={"verify_signature": False})["jti"]), "1", ex=60)
    redis.set(revoked_user_key(deleted), repr(time.time() + 1), ex=60)  # tokens issued before now+1 s
    for headers in (old_session, old_token):
        response = client.get("/api/users/credits", headers=headers)
        assert (response.status_code, response.json["error"]["code"]) == (401, "TOKEN_REVOKED")
    assert client.get("/api/users/credits", headers=as_user(signed_out)).status_code == 200  # a new session
