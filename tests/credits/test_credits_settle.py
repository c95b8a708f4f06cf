"""Settling a finished job in one movement (``POST /internal/holds/<job>/settle``): the
delivered images charged at the hold's price, the rest released, the hold closed, in one
transaction; replays, captures made before, conflicts and late calls."""
from __future__ import annotations

from datetime import timedelta

import pytest

from shared.db import utcnow
from services.credits.audit import audit


def post(client, headers, path, body):
    return client.post(path, json=body, headers=headers)


def hold(client, headers, user_id, job_id, images):
    response = post(client, headers, "/internal/holds",
                    {"userId": user_id, "jobId": job_id, "workflow": "text2img", "images": images})
    assert response.status_code == 201, response.json


def settle(client, headers, job_id, images, key=None):
    return post(client, headers, f"/internal/holds/{job_id}/settle",
                {"images": images, "idempotencyKey": key or f"settle:{job_id}"})


def balance(client, headers, user_id):
    return post(client, headers, "/internal/accounts", {"userId": user_id}).json["data"]


def rows_of(client, as_user, user_id):
    response = client.get("/api/users/credits/transactions", headers=as_user(user_id))
    return [(r["type"], r["amount"], r["heldChange"], r["balanceBefore"], r["balanceAfter"])
            for r in reversed(response.json["data"]["items"])]


def test_settle_charges_the_delivered_images_and_returns_the_rest_in_one_movement(
        credits, client, service_headers, as_user, new_user_id, job_id):
    user_id = new_user_id()
    hold(client, service_headers, user_id, job_id, 3)
    response = settle(client, service_headers, job_id, 2)
    assert response.status_code == 200
    assert response.json["data"] == {"jobId": job_id, "captured": 30, "released": 15, "remaining": 0}
    assert balance(client, service_headers, user_id) == {"available": 470, "held": 0}
    assert rows_of(client, as_user, user_id) == [
        ("signup_bonus", 500, 0, 0, 500), ("hold", -45, 45, 500, 455),
        ("capture", 0, -30, 455, 455), ("release", 15, -15, 455, 470)]
    by_job = client.get("/api/users/credits/transactions", query_string={"groupBy": "job"},
                        headers=as_user(user_id)).json["data"]["items"][0]
    assert (by_job["jobId"], by_job["holdStatus"], by_job["images"], by_job["amount"], by_job["held"]) == (
        job_id, "settled", 2, -30, 0)
    assert [item.render() for item in audit(credits.db)] == []


def test_every_image_delivered_writes_no_release_and_none_delivered_no_capture(
        client, service_headers, as_user, new_user_id, job_id):
    user_id = new_user_id()
    hold(client, service_headers, user_id, job_id, 2)
    hold(client, service_headers, user_id, job_id + "-none", 2)
    assert settle(client, service_headers, job_id, 2).json["data"] == {
        "jobId": job_id, "captured": 30, "released": 0, "remaining": 0}
    assert settle(client, service_headers, job_id + "-none", 0).json["data"] == {
        "jobId": job_id + "-none", "captured": 0, "released": 30, "remaining": 0}
    assert [row[0] for row in rows_of(client, as_user, user_id)] == [
        "signup_bonus", "hold", "hold", "capture", "release"]
    assert balance(client, service_headers, user_id) == {"available": 470, "held": 0}


def test_images_captured_before_count_towards_the_settlement(credits, client, service_headers, new_user_id,
                                                              job_id):
    """A worker of the previous version captured image by image; the settlement charges only
    what is still owed, whatever keys those captures had."""
    user_id = new_user_id()
    hold(client, service_headers, user_id, job_id, 3)
    post(client, service_headers, f"/internal/holds/{job_id}/capture", {"idempotencyKey": f"capture:{job_id}:0"})
    assert settle(client, service_headers, job_id, 2).json["data"] == {
        "jobId": job_id, "captured": 15, "released": 15, "remaining": 0}
    assert balance(client, service_headers, user_id) == {"available": 470, "held": 0}
    assert [item.render() for item in audit(credits.db)] == []


def test_a_replay_answers_what_the_first_settlement_did_and_moves_nothing(
        client, service_headers, as_user, new_user_id, job_id):
    user_id = new_user_id()
    hold(client, service_headers, user_id, job_id, 3)
    first = settle(client, service_headers, job_id, 1)
    again = settle(client, service_headers, job_id, 1)
    assert first.status_code == again.status_code == 200
    assert first.json == again.json
    assert first.json["data"] == {"jobId": job_id, "captured": 15, "released": 30, "remaining": 0}
    other_count = settle(client, service_headers, job_id, 2)
    assert (other_count.status_code, other_count.json["error"]["code"]) == (409, "IDEMPOTENCY_CONFLICT")
    assert other_count.json["error"]["details"] == {"images": 1, "requested": 2}
    assert len(rows_of(client, as_user, user_id)) == 4
    assert balance(client, service_headers, user_id) == {"available": 485, "held": 0}


def test_a_hold_settled_otherwise_is_409_unless_its_charge_is_the_one_asked(client, service_headers,
                                                                           new_user_id, job_id):
    user_id = new_user_id()
    hold(client, service_headers, user_id, job_id, 2)
    post(client, service_headers, f"/internal/holds/{job_id}/capture", {"idempotencyKey": f"capture:{job_id}:0"})
    post(client, service_headers, f"/internal/holds/{job_id}/release", {"idempotencyKey": f"release:{job_id}"})
    same = settle(client, service_headers, job_id, 1)
    assert same.status_code == 200
    assert same.json["data"] == {"jobId": job_id, "captured": 0, "released": 0, "remaining": 0}
    more = settle(client, service_headers, job_id, 2)
    assert (more.status_code, more.json["error"]["code"]) == (409, "HOLD_SETTLED")
    assert more.json["error"]["details"] == {"status": "settled"}
    late_capture = post(client, service_headers, f"/internal/holds/{job_id}/capture",
                        {"idempotencyKey": f"capture:{job_id}:1"})
    assert late_capture.json["error"]["code"] == "HOLD_SETTLED"
    assert balance(client, service_headers, user_id) == {"available": 485, "held": 0}


def test_an_expired_or_closed_hold_cannot_be_settled(credits, client, service_headers, new_user_id, job_id):
    user_id = new_user_id()
    hold(client, service_headers, user_id, job_id, 2)
    assert credits.expire_hold(job_id, now=utcnow() + timedelta(days=1)) == 30
    expired = settle(client, service_headers, job_id, 1)
    assert (expired.status_code, expired.json["error"]["code"]) == (409, "HOLD_SETTLED")
    assert expired.json["error"]["details"] == {"status": "expired"}

    closing = new_user_id()
    hold(client, service_headers, closing, job_id + "-c", 1)
    credits.close_account(closing)
    closed = settle(client, service_headers, job_id + "-c", 1)
    assert (closed.status_code, closed.json["error"]["code"]) == (409, "HOLD_SETTLED")
    assert balance(client, service_headers, user_id) == {"available": 500, "held": 0}


@pytest.mark.parametrize("images, code", [(3, "HOLD_EXCEEDED"), (0, "HOLD_CAPTURED")])
def test_a_settlement_outside_the_hold_is_409_and_moves_nothing(client, service_headers, new_user_id, job_id,
                                                                images, code):
    user_id = new_user_id()
    hold(client, service_headers, user_id, job_id, 2)
    post(client, service_headers, f"/internal/holds/{job_id}/capture", {"idempotencyKey": f"capture:{job_id}:0"})
    response = settle(client, service_headers, job_id, images)
    assert (response.status_code, response.json["error"]["code"]) == (409, code)
    assert balance(client, service_headers, user_id) == {"available": 470, "held": 15}


def test_a_key_that_settled_another_job_is_409(client, service_headers, new_user_id, job_id):
    user_id = new_user_id()
    hold(client, service_headers, user_id, job_id, 1)
    hold(client, service_headers, user_id, job_id + "-b", 1)
    assert settle(client, service_headers, job_id, 1, key="shared-key").status_code == 200
    reused = settle(client, service_headers, job_id + "-b", 1, key="shared-key")
    assert (reused.status_code, reused.json["error"]["code"]) == (409, "IDEMPOTENCY_CONFLICT")
    assert balance(client, service_headers, user_id) == {"available": 470, "held": 15}


def test_settle_errors(client, service_headers, new_user_id, job_id):
    missing = settle(client, service_headers, job_id, 1)
    assert (missing.status_code, missing.json["error"]["code"]) == (404, "HOLD_NOT_FOUND")
    hold(client, service_headers, new_user_id(), job_id, 1)
    for body in ({"images": 1}, {"images": -1, "idempotencyKey": "k"}, {"images": 17, "idempotencyKey": "k"},
                 {"images": "1", "idempotencyKey": "k"}, {"images": 1, "idempotencyKey": "k", "extra": 1}):
        response = post(client, service_headers, f"/internal/holds/{job_id}/settle", body)
        assert (response.status_code, response.json["error"]["code"]) == (422, "VALIDATION_ERROR"), body
