"""The ledger read by job (one row per render job, with what the render domain tells of it),
balances in bulk for auth's user list, and who redeemed a code."""
from __future__ import annotations

import pytest


def hold(client, service_headers, user_id, job_id, images):
    response = client.post("/internal/holds", headers=service_headers,
                           json={"userId": user_id, "jobId": job_id, "workflow": "text2img", "images": images})
    assert response.status_code == 201, response.json


def settle(client, service_headers, job_id, captured_images):
    for index in range(captured_images):
        assert client.post(f"/internal/holds/{job_id}/capture", headers=service_headers,
                           json={"images": 1, "idempotencyKey": f"capture:{job_id}:{index}"}).status_code == 200
    assert client.post(f"/internal/holds/{job_id}/release", headers=service_headers,
                       json={"idempotencyKey": f"release:{job_id}"}).status_code == 200


@pytest.fixture
def statement(client, service_headers, admin, fake_peers, new_user_id, job_id):
    """A user with a finished job (2 asked, 1 delivered), a running one and a grant, newest last."""
    user_id = new_user_id()
    done, running = f"{job_id}-done", f"{job_id}-running"
    hold(client, service_headers, user_id, done, 2)
    settle(client, service_headers, done, 1)
    hold(client, service_headers, user_id, running, 1)
    assert client.post("/api/admin/credits/grant", headers=admin, json={
        "userId": user_id, "amount": 40, "reason": "a gift"}).status_code == 200
    fake_peers.summaries.update({
        done: {"userId": user_id, "status": "failed", "workflow": "text2img", "prompt": "a red fox",
               "imagesDelivered": 1, "thumbnailUrl": "/media/thumbs/fox.webp?exp=1&sig=x", "width": 512,
               "height": 768},
        running: {"userId": user_id, "status": "running", "workflow": "text2img", "prompt": "a kite",
                  "imagesDelivered": 0, "thumbnailUrl": None, "width": 512, "height": 512}})
    return user_id, done, running


def by_job(client, headers, query=""):
    response = client.get(f"/api/users/credits/transactions?groupBy=job{query}", headers=headers)
    assert response.status_code == 200, response.json
    return response.json["data"]


def test_one_row_per_job_beside_the_other_movements(client, as_user, statement, fake_peers):
    user_id, done, running = statement
    fake_peers.summary_calls.clear()
    page = by_job(client, as_user(user_id))
    assert page["total"] == 4
    grant, running_row, done_row, bonus = page["items"]
    assert (grant["kind"], grant["type"], grant["amount"]) == ("entry", "admin_grant", 40)
    assert (bonus["kind"], bonus["type"], bonus["amount"]) == ("entry", "signup_bonus", 500)
    assert done_row == {
        "kind": "job", "jobId": done, "workflow": "text2img", "status": "failed", "holdStatus": "settled",
        "imagesRequested": 2, "images": 1, "pricePerImage": 15, "amount": -15, "held": 0, "prompt": "a red fox",
        "thumbnailUrl": "/media/thumbs/fox.webp?exp=1&sig=x", "width": 512, "height": 768,
        "createdAt": done_row["createdAt"]}
    assert (running_row["jobId"], running_row["status"], running_row["amount"], running_row["held"],
            running_row["images"]) == (running, "running", -15, 15, 0)
    # The net of the rows is the balance: 500 + 40 − 15 − 15.
    assert sum(row["amount"] for row in page["items"]) == 510
    assert fake_peers.summary_calls == [[running, done]]  # one batch call for the page


def test_pages_count_jobs_not_ledger_rows(client, as_user, statement, fake_peers):
    user_id, done, running = statement
    fake_peers.summary_calls.clear()
    first = by_job(client, as_user(user_id), "&pageSize=2")
    second = by_job(client, as_user(user_id), "&pageSize=2&page=2")
    assert [row.get("jobId", row.get("type")) for row in first["items"] + second["items"]] == [
        "admin_grant", running, done, "signup_bonus"]
    assert fake_peers.summary_calls == [[running], [done]]


def test_rows_stand_without_the_render_domain(client, as_user, statement, fake_peers, caplog):
    user_id, done, _ = statement
    fake_peers.summaries_broken = True
    try:
        page = by_job(client, as_user(user_id))
    finally:
        fake_peers.summaries_broken = False
    done_row = page["items"][2]
    assert (done_row["jobId"], done_row["amount"], done_row["images"], done_row["status"], done_row["prompt"]) == (
        done, -15, 1, None, None)
    assert "ledger shown without them" in caplog.text


def test_another_users_job_summary_is_not_shown(client, as_user, statement, fake_peers):
    user_id, done, _ = statement
    fake_peers.summaries[done] = {**fake_peers.summaries[done], "userId": user_id + 1}
    row = by_job(client, as_user(user_id))["items"][2]
    assert (row["jobId"], row["prompt"], row["thumbnailUrl"]) == (done, None, None)


@pytest.mark.parametrize("query", ["groupBy=day", "groupBy=job&type=hold", "groupBy="])
def test_bad_grouping_is_422(client, as_user, new_user_id, query):
    response = client.get(f"/api/users/credits/transactions?{query}", headers=as_user(new_user_id()))
    assert response.status_code == 422


def test_balances_of_many_users_in_one_call(client, service_headers, credits, new_user_id):
    first, second, without = new_user_id(), new_user_id(), new_user_id()
    credits.open_account(first)
    credits.open_account(second)
    hold(client, service_headers, second, f"bulk-{second}", 2)
    response = client.get(f"/internal/accounts?userIds={second},{without},{first}", headers=service_headers)
    assert response.status_code == 200
    assert response.json["data"]["items"] == sorted([
        {"userId": first, "available": 500, "held": 0}, {"userId": second, "available": 470, "held": 30}],
        key=lambda item: item["userId"])
    for query in ("", "userIds=", "userIds=x", "userIds=0", "userIds=" + ",".join(str(n) for n in range(1, 102))):
        assert client.get(f"/internal/accounts?{query}", headers=service_headers).status_code == 422, query
    assert client.get(f"/internal/accounts?userIds={first}").status_code == 403


def test_who_redeemed_a_code(client, as_user, admin, new_user_id):
    code = client.post("/api/admin/credits/redeem-codes", headers=admin,
                       json={"amount": 25, "maxUses": 5}).json["data"]["code"]
    users = [new_user_id() for _ in range(3)]
    for user_id in users:
        assert client.post("/api/users/credits/redeem", headers=as_user(user_id), json={"code": code}).status_code == 200
    listed = client.get(f"/api/admin/credits/redeem-codes/{code.lower()}/redemptions?pageSize=2", headers=admin)
    assert listed.status_code == 200
    data = listed.json["data"]
    assert (data["total"], [item["userId"] for item in data["items"]]) == (3, users[:0:-1])
    assert {item["amount"] for item in data["items"]} == {25} and data["items"][0]["createdAt"].endswith("Z")
    unknown = client.get("/api/admin/credits/redeem-codes/NO-SUCH-CODE/redemptions", headers=admin)
    assert (unknown.status_code, unknown.json["error"]["code"]) == (404, "REDEEM_CODE_NOT_FOUND")
    assert client.get(f"/api/admin/credits/redeem-codes/{code}/redemptions",
                      headers=as_user(users[0])).status_code == 403
