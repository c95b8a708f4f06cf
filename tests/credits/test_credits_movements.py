"""Signup bonus, holds, captures and releases through the internal API, with exact balances."""
from __future__ import annotations


def post(client, headers, path, body):
    return client.post(path, json=body, headers=headers)


def ledger(client, service_headers, issue_token, user_id, **query):
    headers = {**service_headers, "Authorization": f"Bearer {issue_token(user_id, f'u{user_id}')}"}
    response = client.get("/api/users/credits/transactions", query_string=query, headers=headers)
    assert response.status_code == 200, response.json
    return response.json["data"]


def balance(client, service_headers, user_id):
    return post(client, service_headers, "/internal/accounts", {"userId": user_id}).json["data"]


def test_signup_bonus_is_granted_once(client, service_headers, issue_token, new_user_id):
    user_id = new_user_id()
    first = post(client, service_headers, "/internal/accounts", {"userId": user_id})
    second = post(client, service_headers, "/internal/accounts", {"userId": user_id})
    assert first.status_code == second.status_code == 200
    assert first.json == second.json == {"success": True, "data": {"available": 500, "held": 0}}
    rows = ledger(client, service_headers, issue_token, user_id)
    assert rows["total"] == 1
    entry = rows["items"][0]
    assert (entry["type"], entry["amount"], entry["heldChange"]) == ("signup_bonus", 500, 0)
    assert (entry["balanceBefore"], entry["balanceAfter"]) == (0, 500)
    assert entry["createdAt"].endswith("Z")


def test_hold_capture_twice_then_release_nothing(client, service_headers, issue_token, new_user_id, job_id):
    user_id = new_user_id()
    hold = post(client, service_headers, "/internal/holds",
                {"userId": user_id, "jobId": job_id, "amount": 30, "description": "2 images"})
    assert hold.status_code == 201
    assert hold.json["data"] == {"jobId": job_id, "amount": 30, "available": 470, "held": 30}

    for index, remaining in ((0, 15), (1, 0)):
        capture = post(client, service_headers, f"/internal/holds/{job_id}/capture",
                       {"amount": 15, "idempotencyKey": f"capture:{job_id}:{index}"})
        assert capture.status_code == 200
        assert capture.json["data"] == {"jobId": job_id, "captured": 15, "remaining": remaining}
    assert balance(client, service_headers, user_id) == {"available": 470, "held": 0}

    release = post(client, service_headers, f"/internal/holds/{job_id}/release",
                   {"idempotencyKey": f"release:{job_id}"})
    assert release.status_code == 200
    assert release.json["data"] == {"jobId": job_id, "released": 0, "remaining": 0}
    assert balance(client, service_headers, user_id) == {"available": 470, "held": 0}

    rows = ledger(client, service_headers, issue_token, user_id)["items"]
    assert [(r["type"], r["amount"], r["heldChange"], r["balanceAfter"]) for r in rows] == [
        ("capture", 0, -15, 470), ("capture", 0, -15, 470), ("hold", -30, 30, 470), ("signup_bonus", 500, 0, 500)]
    assert rows[2]["reference"] == job_id and rows[2]["description"] == "2 images"


def test_partial_capture_releases_the_rest(client, service_headers, issue_token, new_user_id, job_id):
    """Three images held, two stored: the third image's 15 credits go back."""
    user_id = new_user_id()
    post(client, service_headers, "/internal/holds", {"userId": user_id, "jobId": job_id, "amount": 45})
    for index in range(2):
        post(client, service_headers, f"/internal/holds/{job_id}/capture",
             {"amount": 15, "idempotencyKey": f"capture:{job_id}:{index}"})
    release = post(client, service_headers, f"/internal/holds/{job_id}/release", {"idempotencyKey": "r-" + job_id})
    assert release.json["data"] == {"jobId": job_id, "released": 15, "remaining": 0}
    assert balance(client, service_headers, user_id) == {"available": 470, "held": 0}
    top = ledger(client, service_headers, issue_token, user_id)["items"][0]
    assert (top["type"], top["amount"], top["heldChange"], top["balanceBefore"], top["balanceAfter"]) == (
        "release", 15, -15, 455, 470)


def test_replays_change_nothing_twice(client, service_headers, issue_token, new_user_id, job_id):
    user_id = new_user_id()
    body = {"userId": user_id, "jobId": job_id, "amount": 45, "description": "x"}
    assert post(client, service_headers, "/internal/holds", body).status_code == 201
    replay = post(client, service_headers, "/internal/holds", body)
    assert replay.status_code == 200
    assert replay.json["data"] == {"jobId": job_id, "amount": 45, "available": 455, "held": 45}

    capture = {"amount": 15, "idempotencyKey": f"capture:{job_id}:0"}
    first = post(client, service_headers, f"/internal/holds/{job_id}/capture", capture)
    post(client, service_headers, f"/internal/holds/{job_id}/capture",
         {"amount": 15, "idempotencyKey": f"capture:{job_id}:1"})
    again = post(client, service_headers, f"/internal/holds/{job_id}/capture", capture)
    assert first.json == again.json == {"success": True,
                                        "data": {"jobId": job_id, "captured": 15, "remaining": 30}}

    release = {"idempotencyKey": f"release:{job_id}"}
    released = post(client, service_headers, f"/internal/holds/{job_id}/release", release)
    assert released.json == post(client, service_headers, f"/internal/holds/{job_id}/release", release).json
    assert released.json["data"]["released"] == 15
    other_key = post(client, service_headers, f"/internal/holds/{job_id}/release", {"idempotencyKey": "other"})
    assert other_key.json["data"] == {"jobId": job_id, "released": 0, "remaining": 0}

    assert balance(client, service_headers, user_id) == {"available": 470, "held": 0}
    assert ledger(client, service_headers, issue_token, user_id)["total"] == 5


def test_short_balance_is_402_with_shortfall(client, service_headers, new_user_id, job_id):
    user_id = new_user_id()
    response = post(client, service_headers, "/internal/holds", {"userId": user_id, "jobId": job_id, "amount": 505})
    assert response.status_code == 402
    assert response.json["error"]["code"] == "INSUFFICIENT_CREDITS"
    assert response.json["error"]["details"] == {"available": 500, "required": 505, "shortfall": 5}
    assert balance(client, service_headers, user_id) == {"available": 500, "held": 0}


def test_conflicts_are_409(client, service_headers, new_user_id, job_id):
    user_id = new_user_id()
    post(client, service_headers, "/internal/holds", {"userId": user_id, "jobId": job_id, "amount": 15})
    different = post(client, service_headers, "/internal/holds", {"userId": user_id, "jobId": job_id, "amount": 30})
    assert different.status_code == 409
    assert different.json["error"]["code"] == "IDEMPOTENCY_CONFLICT"

    exceeded = post(client, service_headers, f"/internal/holds/{job_id}/capture", {"amount": 30, "idempotencyKey": "k1"})
    assert exceeded.status_code == 409
    assert exceeded.json["error"]["code"] == "HOLD_EXCEEDED"

    missing = post(client, service_headers, "/internal/holds/no-such-job/capture", {"amount": 15, "idempotencyKey": "k2"})
    assert missing.status_code == 404
    assert balance(client, service_headers, user_id) == {"available": 485, "held": 15}


def test_capture_after_release_is_409(client, service_headers, new_user_id, job_id):
    user_id = new_user_id()
    post(client, service_headers, "/internal/holds", {"userId": user_id, "jobId": job_id, "amount": 30})
    post(client, service_headers, f"/internal/holds/{job_id}/release", {"idempotencyKey": f"release:{job_id}"})
    late = post(client, service_headers, f"/internal/holds/{job_id}/capture",
                {"amount": 15, "idempotencyKey": f"capture:{job_id}:0"})
    assert late.status_code == 409
    assert late.json["error"]["code"] == "HOLD_SETTLED"
    assert balance(client, service_headers, user_id) == {"available": 500, "held": 0}
