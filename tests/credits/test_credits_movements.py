"""Signup bonus, holds at the configured price, captures and releases through the internal
API, with exact balances and ledger rows; replays, conflicts and late calls."""
from __future__ import annotations

import pytest
from sqlalchemy import update

from services.credits.app import create_app
from services.credits.models import CreditHold


def post(client, headers, path, body):
    return client.post(path, json=body, headers=headers)


def hold_body(user_id, job_id, images=1, workflow="text2img", **extra):
    return {"userId": user_id, "jobId": job_id, "workflow": workflow, "images": images, **extra}


def ledger(client, as_user, user_id, **query):
    response = client.get("/api/users/credits/transactions", query_string=query, headers=as_user(user_id))
    assert response.status_code == 200, response.json
    return response.json["data"]


def balance(client, service_headers, user_id):
    return post(client, service_headers, "/internal/accounts", {"userId": user_id}).json["data"]


def test_signup_bonus_is_granted_once(client, service_headers, as_user, new_user_id):
    user_id = new_user_id()
    first = post(client, service_headers, "/internal/accounts", {"userId": user_id})
    second = post(client, service_headers, "/internal/accounts", {"userId": user_id})
    assert first.status_code == second.status_code == 200
    assert first.json == second.json == {"success": True, "data": {"available": 500, "held": 0}}
    rows = ledger(client, as_user, user_id)
    assert rows["total"] == 1
    entry = rows["items"][0]
    assert (entry["type"], entry["amount"], entry["heldChange"]) == ("signup_bonus", 500, 0)
    assert (entry["balanceBefore"], entry["balanceAfter"]) == (0, 500)
    assert entry["createdAt"].endswith("Z")


def test_pricing_is_public_and_from_configuration(client, service_headers):
    response = client.get("/api/credits/pricing", headers=service_headers)
    assert response.status_code == 200
    assert response.json["data"] == {"pricing": {"text2img": 15, "img2img": 15, "upscale": 10, "text2img_lora": 15,
                                                 "flux_text2img": 15}, "currency": "credits"}


def test_hold_quotes_the_price_capture_twice_then_release_nothing(client, service_headers, as_user, new_user_id,
                                                                  job_id):
    user_id = new_user_id()
    hold = post(client, service_headers, "/internal/holds", hold_body(user_id, job_id, 2, description="2 images"))
    assert hold.status_code == 201
    assert hold.json["data"] == {"jobId": job_id, "amount": 30, "pricePerImage": 15, "available": 470, "held": 30}

    for index, remaining in ((0, 15), (1, 0)):
        capture = post(client, service_headers, f"/internal/holds/{job_id}/capture",
                       {"images": 1, "idempotencyKey": f"capture:{job_id}:{index}"})
        assert capture.status_code == 200
        assert capture.json["data"] == {"jobId": job_id, "captured": 15, "remaining": remaining}
    assert balance(client, service_headers, user_id) == {"available": 470, "held": 0}

    release = post(client, service_headers, f"/internal/holds/{job_id}/release", {"idempotencyKey": f"release:{job_id}"})
    assert release.status_code == 200
    assert release.json["data"] == {"jobId": job_id, "released": 0, "remaining": 0}
    assert balance(client, service_headers, user_id) == {"available": 470, "held": 0}

    rows = ledger(client, as_user, user_id)["items"]
    assert [(r["type"], r["amount"], r["heldChange"], r["balanceAfter"]) for r in rows] == [
        ("capture", 0, -15, 470), ("capture", 0, -15, 470), ("hold", -30, 30, 470), ("signup_bonus", 500, 0, 500)]
    assert rows[2]["reference"] == job_id and rows[2]["description"] == "2 images"


def test_upscale_is_priced_per_image_and_expected_cost_is_checked(client, service_headers, new_user_id, job_id):
    user_id = new_user_id()
    changed = post(client, service_headers, "/internal/holds",
                   hold_body(user_id, job_id, 3, workflow="upscale", expectedCost=45))
    assert changed.status_code == 409
    assert changed.json["error"]["code"] == "PRICE_CHANGED"
    assert changed.json["error"]["details"] == {"expectedCost": 45, "cost": 30, "pricePerImage": 10}
    assert balance(client, service_headers, user_id) == {"available": 500, "held": 0}

    agreed = post(client, service_headers, "/internal/holds", hold_body(user_id, job_id, 3, workflow="upscale",
                                                                         expectedCost=30))
    assert agreed.status_code == 201
    assert agreed.json["data"] == {"jobId": job_id, "amount": 30, "pricePerImage": 10, "available": 470, "held": 30}


def test_a_job_keeps_the_price_it_was_admitted_at(settings, client, service_headers, new_user_id, job_id):
    """After a price rise, a replay of the admission returns the old hold, and captures
    charge the old price per image: the worker sends only how many images it delivered."""
    from services.credits.config import load_config
    user_id = new_user_id()
    assert post(client, service_headers, "/internal/holds", hold_body(user_id, job_id, 2, expectedCost=30)).status_code == 201
    dearer = create_app(settings, load_config(settings, {"CREDITS_PRICING": '{"text2img": 20}'}))
    try:
        again = dearer.test_client().post("/internal/holds", headers=service_headers,
                                          json=hold_body(user_id, job_id, 2, expectedCost=30))
        assert again.status_code == 200
        assert again.json["data"]["amount"] == 30 and again.json["data"]["pricePerImage"] == 15
        new_job = dearer.test_client().post("/internal/holds", headers=service_headers,
                                            json=hold_body(user_id, job_id + "-b", 2, expectedCost=30))
        assert new_job.status_code == 409 and new_job.json["error"]["details"]["cost"] == 40
        both = dearer.test_client().post(f"/internal/holds/{job_id}/capture", headers=service_headers,
                                         json={"images": 2, "idempotencyKey": f"capture:{job_id}:0-1"})
        assert both.json["data"] == {"jobId": job_id, "captured": 30, "remaining": 0}
    finally:
        dearer.extensions["db"].dispose()


def test_a_hold_from_before_prices_per_image_cannot_be_captured_only_released(credits, client, service_headers,
                                                                             new_user_id, job_id):
    """Holds admitted before migration c0002 stored neither their price per image nor their
    image count: a capture is refused clearly and charges nothing; the release returns all."""
    user_id = new_user_id()
    post(client, service_headers, "/internal/holds", hold_body(user_id, job_id, 2))
    with credits.db.transaction() as session:
        session.execute(update(CreditHold).where(CreditHold.job_id == job_id)
                        .values(workflow=None, images=None, price_per_image=None))
    refused = post(client, service_headers, f"/internal/holds/{job_id}/capture",
                   {"idempotencyKey": f"capture:{job_id}:0"})
    assert (refused.status_code, refused.json["error"]["code"]) == (409, "HOLD_UNPRICED")
    assert balance(client, service_headers, user_id) == {"available": 470, "held": 30}
    released = post(client, service_headers, f"/internal/holds/{job_id}/release", {"idempotencyKey": f"release:{job_id}"})
    assert released.json["data"] == {"jobId": job_id, "released": 30, "remaining": 0}
    assert balance(client, service_headers, user_id) == {"available": 500, "held": 0}


def test_unknown_workflow_is_422(client, service_headers, new_user_id, job_id):
    response = post(client, service_headers, "/internal/holds", hold_body(new_user_id(), job_id, workflow="video"))
    assert response.status_code == 422
    assert response.json["error"]["code"] == "UNKNOWN_WORKFLOW"


def test_partial_capture_releases_the_rest(client, service_headers, as_user, new_user_id, job_id):
    """Three images held, two stored: the third image's 15 credits go back."""
    user_id = new_user_id()
    post(client, service_headers, "/internal/holds", hold_body(user_id, job_id, 3))
    for index in range(2):
        post(client, service_headers, f"/internal/holds/{job_id}/capture",
             {"idempotencyKey": f"capture:{job_id}:{index}"})
    release = post(client, service_headers, f"/internal/holds/{job_id}/release", {"idempotencyKey": "r-" + job_id})
    assert release.json["data"] == {"jobId": job_id, "released": 15, "remaining": 0}
    assert balance(client, service_headers, user_id) == {"available": 470, "held": 0}
    top = ledger(client, as_user, user_id)["items"][0]
    assert (top["type"], top["amount"], top["heldChange"], top["balanceBefore"], top["balanceAfter"]) == (
        "release", 15, -15, 455, 470)


def test_replays_change_nothing_twice(client, service_headers, as_user, new_user_id, job_id):
    user_id = new_user_id()
    body = hold_body(user_id, job_id, 3, description="x")
    assert post(client, service_headers, "/internal/holds", body).status_code == 201
    replay = post(client, service_headers, "/internal/holds", body)
    assert replay.status_code == 200
    assert replay.json["data"] == {"jobId": job_id, "amount": 45, "pricePerImage": 15, "available": 455, "held": 45}

    capture = {"idempotencyKey": f"capture:{job_id}:0"}
    first = post(client, service_headers, f"/internal/holds/{job_id}/capture", capture)
    post(client, service_headers, f"/internal/holds/{job_id}/capture", {"idempotencyKey": f"capture:{job_id}:1"})
    again = post(client, service_headers, f"/internal/holds/{job_id}/capture", capture)
    assert first.json == again.json == {"success": True, "data": {"jobId": job_id, "captured": 15, "remaining": 30}}

    release = {"idempotencyKey": f"release:{job_id}"}
    released = post(client, service_headers, f"/internal/holds/{job_id}/release", release)
    assert released.json == post(client, service_headers, f"/internal/holds/{job_id}/release", release).json
    assert released.json["data"]["released"] == 15
    other_key = post(client, service_headers, f"/internal/holds/{job_id}/release", {"idempotencyKey": "other"})
    assert other_key.json["data"] == {"jobId": job_id, "released": 0, "remaining": 0}

    assert balance(client, service_headers, user_id) == {"available": 470, "held": 0}
    assert ledger(client, as_user, user_id)["total"] == 5


def test_a_redelivered_capture_after_a_crash_does_not_capture_again(settings, client, service_headers, as_user,
                                                                     new_user_id, job_id):
    """The worker captured, died before acknowledging, and its message ran again against a
    restarted credits process: the same key returns the first result."""
    user_id = new_user_id()
    post(client, service_headers, "/internal/holds", hold_body(user_id, job_id, 2))
    body = {"idempotencyKey": f"capture:{job_id}:0"}
    first = post(client, service_headers, f"/internal/holds/{job_id}/capture", body)
    restarted = create_app(settings)
    try:
        again = restarted.test_client().post(f"/internal/holds/{job_id}/capture", json=body, headers=service_headers)
    finally:
        restarted.extensions["db"].dispose()
    assert first.json == again.json
    assert balance(client, service_headers, user_id) == {"available": 470, "held": 15}
    assert ledger(client, as_user, user_id, type="capture")["total"] == 1


def test_short_balance_is_402_with_shortfall(client, service_headers, new_user_id, job_id):
    user_id = new_user_id()
    for index in range(2):
        post(client, service_headers, "/internal/holds", hold_body(user_id, f"{job_id}-{index}", 16))
    response = post(client, service_headers, "/internal/holds", hold_body(user_id, job_id, 16))
    assert response.status_code == 402
    assert response.json["error"]["code"] == "INSUFFICIENT_CREDITS"
    assert response.json["error"]["details"] == {"available": 20, "required": 240, "shortfall": 220}
    assert balance(client, service_headers, user_id) == {"available": 20, "held": 480}


@pytest.mark.parametrize("change", [{"images": 2}, {"workflow": "img2img"}, {"expectedCost": 30}, {"userId": 1}])
def test_replaying_a_job_with_a_different_request_is_409(client, service_headers, new_user_id, job_id, change):
    user_id = new_user_id()
    post(client, service_headers, "/internal/holds", hold_body(user_id, job_id))
    different = post(client, service_headers, "/internal/holds", {**hold_body(user_id, job_id), **change})
    assert different.status_code == 409
    assert different.json["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    assert balance(client, service_headers, user_id) == {"available": 485, "held": 15}


def test_capture_conflicts_are_409_or_404(client, service_headers, new_user_id, job_id):
    user_id = new_user_id()
    post(client, service_headers, "/internal/holds", hold_body(user_id, job_id, 2))
    exceeded = post(client, service_headers, f"/internal/holds/{job_id}/capture", {"images": 3, "idempotencyKey": "k1"})
    assert exceeded.status_code == 409
    assert exceeded.json["error"]["code"] == "HOLD_EXCEEDED"
    assert exceeded.json["error"]["details"] == {"remaining": 30, "requested": 45}

    key = f"capture:{job_id}:0"
    assert post(client, service_headers, f"/internal/holds/{job_id}/capture",
                {"images": 1, "idempotencyKey": key}).status_code == 200
    other_count = post(client, service_headers, f"/internal/holds/{job_id}/capture", {"images": 2, "idempotencyKey": key})
    assert other_count.status_code == 409
    assert other_count.json["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    assert other_count.json["error"]["details"] == {"images": 1, "requested": 2}
    other_job_key = post(client, service_headers, f"/internal/holds/{job_id}/capture",
                         {"idempotencyKey": f"hold:{job_id}"})
    assert other_job_key.json["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    beyond = post(client, service_headers, f"/internal/holds/{job_id}/capture", {"images": 2, "idempotencyKey": "k3"})
    assert (beyond.status_code, beyond.json["error"]["code"]) == (409, "HOLD_EXCEEDED")
    assert beyond.json["error"]["details"] == {"remaining": 15, "requested": 30}

    missing = post(client, service_headers, "/internal/holds/no-such-job/capture", {"idempotencyKey": "k2"})
    assert missing.status_code == 404
    assert missing.json["error"]["code"] == "HOLD_NOT_FOUND"
    assert balance(client, service_headers, user_id) == {"available": 470, "held": 15}


def test_capture_after_release_is_409(client, service_headers, new_user_id, job_id):
    user_id = new_user_id()
    post(client, service_headers, "/internal/holds", hold_body(user_id, job_id, 2))
    post(client, service_headers, f"/internal/holds/{job_id}/release", {"idempotencyKey": f"release:{job_id}"})
    late = post(client, service_headers, f"/internal/holds/{job_id}/capture",
                {"idempotencyKey": f"capture:{job_id}:0"})
    assert late.status_code == 409
    assert late.json["error"]["code"] == "HOLD_SETTLED"
    assert balance(client, service_headers, user_id) == {"available": 500, "held": 0}
