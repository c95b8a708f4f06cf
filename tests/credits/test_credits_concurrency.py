"""Parallel holds on one account never overdraw it, whatever the interleaving."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from services.credits.app import create_app


def test_forty_parallel_holds_take_exactly_what_is_available(settings, service_headers, new_user_id):
    # Four apps with their own engines and pools stand in for four gunicorn workers.
    apps = [create_app(settings) for _ in range(4)]
    user_id = new_user_id()
    apps[0].test_client().post("/internal/accounts", json={"userId": user_id}, headers=service_headers)

    def hold(index: int) -> int:
        client = apps[index % len(apps)].test_client()
        response = client.post("/internal/holds", headers=service_headers,
                               json={"userId": user_id, "jobId": f"par-{user_id}-{index}", "amount": 15})
        return response.status_code

    try:
        with ThreadPoolExecutor(max_workers=40) as pool:
            statuses = list(pool.map(hold, range(40)))
        balance = apps[1].test_client().post("/internal/accounts", json={"userId": user_id},
                                             headers=service_headers).json["data"]
    finally:
        for app in apps:
            app.extensions["db"].dispose()

    assert statuses.count(201) == 33
    assert statuses.count(402) == 7
    assert balance == {"available": 5, "held": 495}


def test_parallel_first_calls_open_the_account_once(settings, service_headers, issue_token, new_user_id):
    apps = [create_app(settings) for _ in range(4)]
    user_id = new_user_id()

    def open_account(index: int) -> dict:
        client = apps[index % len(apps)].test_client()
        response = client.post("/internal/accounts", json={"userId": user_id}, headers=service_headers)
        assert response.status_code == 200, response.json
        return response.json["data"]

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(open_account, range(8)))
        token = issue_token(user_id, "racer")
        ledger = apps[0].test_client().get("/api/users/credits/transactions",
                                           headers={**service_headers, "Authorization": f"Bearer {token}"})
    finally:
        for app in apps:
            app.extensions["db"].dispose()

    assert results == [{"available": 500, "held": 0}] * 8
    assert ledger.json["data"]["total"] == 1


def test_parallel_identical_calls_charge_once(settings, service_headers, new_user_id):
    apps = [create_app(settings) for _ in range(4)]
    user_id = new_user_id()
    job = f"same-{user_id}"
    apps[0].test_client().post("/internal/accounts", json={"userId": user_id}, headers=service_headers)

    def call(path: str, body: dict):
        def _call(index: int):
            response = apps[index % len(apps)].test_client().post(path, json=body, headers=service_headers)
            return response.status_code, response.json["data"]
        return _call

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            holds = list(pool.map(call("/internal/holds", {"userId": user_id, "jobId": job, "amount": 30}), range(8)))
            captures = list(pool.map(call(f"/internal/holds/{job}/capture",
                                          {"amount": 15, "idempotencyKey": f"capture:{job}:0"}), range(8)))
        balance = apps[0].test_client().post("/internal/accounts", json={"userId": user_id},
                                             headers=service_headers).json["data"]
    finally:
        for app in apps:
            app.extensions["db"].dispose()

    assert sorted(status for status, _ in holds) == [200] * 7 + [201]
    assert {data["amount"] for _, data in holds} == {30}
    assert captures == [(200, {"jobId": job, "captured": 15, "remaining": 15})] * 8
    assert balance == {"available": 470, "held": 15}
