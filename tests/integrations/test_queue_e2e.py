"""The queue API end to end, on each broker: an internal service (a separate process using
``clients/python``) renders through the bridge; replays, bad messages, a spent budget, unknown
and forbidden workflows each get their documented answer or dead letter; a job that fails in
ComfyUI and one cancelled over HTTP are answered job.failed and job.cancelled, refunded."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime

import pytest
import requests
from aigc_queue_client import FINAL_TYPES
from PIL import Image

from shared.config import PROJECT_ROOT
from services.integrations.contract import schema_errors
from tests.integrations.conftest import PARAMS, PRICE, QueuePlatform, ServiceAccount, emulator_fault

pytestmark = pytest.mark.e2e
BATCH = 50


def final_replies(account: ServiceAccount, request_ids: set[str], timeout: float = 120) -> dict[str, list[dict]]:
    """Every reply of the account until each request has its final one, by request id."""
    replies: dict[str, list[dict]] = {}
    waiting = set(request_ids)
    deadline = time.monotonic() + timeout
    with account.client() as client:
        for reply in client.results(idle_timeout=10):
            assert not schema_errors("queue-reply.v1.json", reply), reply
            replies.setdefault(reply["requestId"], []).append(reply)
            if reply["type"] in FINAL_TYPES:
                waiting.discard(reply["requestId"])
            if not waiting or time.monotonic() > deadline:
                break
    assert not waiting, f"no final reply for {sorted(waiting)[:5]} ({len(waiting)} in all)"
    return replies


def test_an_internal_service_renders_fifty_images_over_the_queue(queue_platform: QueuePlatform):
    account = queue_platform.service_account(budget=1000, maxActiveJobs=8, urlTtlSeconds=600)
    credentials = account.credentials
    started = time.time()
    run = subprocess.run(
        [sys.executable, "clients/python/examples/render_batch.py", "--broker", queue_platform.broker_url,
         "--account", account.name, "--key-id", credentials["keyId"], "--secret", credentials["secret"],
         "--prefix", queue_platform.prefix, "--count", str(BATCH), "--params", json.dumps(PARAMS),
         "--idle-timeout", "60"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "clients" / "python")})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    results, summary = lines[:-1], lines[-1]
    assert summary == {"summary": {"job.succeeded": BATCH}, "unanswered": 0, "repeated": 0, "duplicatesSkipped": 0}
    assert len({result["requestId"] for result in results}) == BATCH, "each request answered exactly once"
    assert len({result["jobId"] for result in results}) == BATCH
    for result in results:
        assert result["data"]["charged"] == PRICE and len(result["data"]["images"]) == 1
        expires = datetime.fromisoformat(result["data"]["images"][0]["expiresAt"].replace("Z", "+00:00")).timestamp()
        assert started + 600 <= expires <= time.time() + 1200, "signed for the account's URL lifetime (600 s to 2x)"

    image = requests.get(results[0]["data"]["images"][0]["url"], timeout=10)
    assert image.status_code == 200 and image.headers["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(image.content)) as picture:
        assert picture.size == (64, 64)
    expired = results[0]["data"]["images"][0]["url"].replace("sig=", "sig=0")
    assert requests.get(expired, timeout=10).status_code in (403, 404)

    credits = _settled(account, 1000 - BATCH * PRICE)
    assert credits == {"available": 1000 - BATCH * PRICE, "held": 0, "granted": 1000, "spent": BATCH * PRICE}
    # The client stopped at the last outcome: nothing answers a request a second time after it either.
    left = queue_platform.drain(credentials["replyQueue"])
    assert [reply for reply in left if reply["type"] in FINAL_TYPES or reply["type"] == "request.duplicate"] == []
    ledger = account.ledger()
    assert ledger[:2] == [("signup_bonus", 0, 0), ("admin_grant", 1000, 0)], "no signup bonus, the budget granted"
    kinds = [kind for kind, *_ in ledger[2:]]
    assert kinds.count("hold") == BATCH and kinds.count("capture") == BATCH and set(kinds) == {"hold", "capture"}
    usage = _usage(account, "succeeded", BATCH)
    assert usage["succeeded"] == BATCH and "rejected" not in usage
    audit = queue_platform.flask("services.credits.app:create_app", "credits", "audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr


def _settled(account: ServiceAccount, available: int, timeout: float = 15) -> dict:
    """The account's credits once nothing is held (a hold is released just after its job ends)."""
    deadline = time.monotonic() + timeout
    while (credits := account.details()["credits"])["held"] or credits["available"] != available:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return credits


def _usage(account: ServiceAccount, status: str, count: int, timeout: float = 15) -> dict:
    """The account's usage once ``count`` requests are ``status``: an outcome is recorded just
    after its reply is published (a crash between the two publishes it again, never loses it)."""
    deadline = time.monotonic() + timeout
    while (usage := account.details()["usage"]).get(status) != count and time.monotonic() < deadline:
        time.sleep(0.2)
    return usage


def test_a_replayed_request_is_rendered_and_answered_once(queue_platform: QueuePlatform):
    account = queue_platform.service_account(budget=100)
    request_id = f"replay-{uuid.uuid4().hex[:8]}"
    with account.client() as client:
        for _ in range(3):
            client.submit("text2img", PARAMS, request_id=request_id, metadata={"campaign": "summer"})
    replies = final_replies(account, {request_id})[request_id]
    _wait_quiet(account, replies)
    kinds = sorted(reply["type"] for reply in replies)
    assert kinds == ["job.succeeded", "request.accepted", "request.duplicate", "request.duplicate"]
    assert all(reply["metadata"] == {"campaign": "summer"} for reply in replies), "metadata is echoed"
    assert len({reply["jobId"] for reply in replies}) == 1
    assert _settled(account, 100 - PRICE)["spent"] == PRICE, "charged once"
    assert account.details()["usage"]["replays"] == 2


def _wait_quiet(account: ServiceAccount, replies: list[dict], seconds: float = 2) -> None:
    """Collect the replies still arriving after the final one (duplicates may come after it)."""
    with account.client() as client:
        replies.extend(client.results(idle_timeout=seconds))


def test_refusals_come_back_with_the_http_error_codes(queue_platform: QueuePlatform):
    poor = queue_platform.service_account(budget=10, allowedWorkflows=["text2img"])
    requests_sent = {}
    with poor.client() as client:
        requests_sent[client.submit("text2img", PARAMS)] = "INSUFFICIENT_CREDITS"
        requests_sent[client.submit("no_such_workflow", PARAMS)] = "UNKNOWN_WORKFLOW"
        requests_sent[client.submit("upscale", {"sourceImage": "upload:nothing"})] = "WORKFLOW_NOT_ALLOWED"
        requests_sent[client.submit("text2img", {**PARAMS, "steps": "many"})] = "VALIDATION_ERROR"
        requests_sent[client.submit("text2img", PARAMS, expected_cost=1)] = "PRICE_CHANGED"
        requests_sent[client.submit("text2img", PARAMS, reply_to="elsewhere")] = "REPLY_TO_NOT_ALLOWED"
    replies = final_replies(poor, set(requests_sent))
    for request_id, code in requests_sent.items():
        (reply,) = replies[request_id]
        assert reply["type"] == "request.rejected" and reply["data"]["error"]["code"] == code, reply
        assert reply["data"]["retryable"] is False
    shortfall = replies[next(r for r, c in requests_sent.items() if c == "INSUFFICIENT_CREDITS")][0]
    assert shortfall["data"]["error"]["details"] == {"available": 10, "required": PRICE, "shortfall": PRICE - 10}
    assert poor.details()["credits"] == {"available": 10, "held": 0, "granted": 10, "spent": 0}
    assert poor.details()["usage"]["rejected"] == len(requests_sent)


def test_bad_messages_go_to_the_dead_letter_queue_with_a_reason(queue_platform: QueuePlatform):
    account = queue_platform.service_account(budget=100)
    before = _dead_letter_counts(queue_platform)
    body = json.dumps({"version": 1, "requestId": "r1", "workflow": "text2img", "params": PARAMS}).encode()
    with account.client() as client:
        client.publish_body(body, headers={})  # unsigned
        client.publish_body(body, headers={"x-key-id": client.key_id, "x-signature": "v1=" + "0" * 64})
        client.publish_body(body, headers={"x-key-id": "qk_someone_else", "x-signature": "v1=00"})
        client.publish_body(b"{not json")
        client.publish_body(json.dumps({"version": 1, "workflow": "text2img"}).encode())  # no requestId
        client.publish_body(json.dumps({"pad": "x" * 70_000}).encode())
    expected = {"UNSIGNED", "BAD_SIGNATURE", "UNKNOWN_KEY", "MALFORMED", "INVALID_REQUEST", "OVERSIZED"}
    letters: list[dict] = []

    def six_letters() -> bool:
        letters.extend(letter for letter in queue_platform.drain(account.credentials["deadLetterQueue"])
                       if letter["queue"] == account.credentials["requestQueue"])
        return len(letters) >= 6

    queue_platform.wait_for(six_letters, 30, "six dead letters")
    assert {letter["reason"] for letter in letters} == expected
    for letter in letters:
        assert not schema_errors("queue-dead-letter.v1.json", letter), letter
        assert letter["queue"] == account.credentials["requestQueue"]
    oversized = next(letter for letter in letters if letter["reason"] == "OVERSIZED")
    assert oversized["bodyTruncated"] is True and len(oversized["body"]) == 4096
    after = _dead_letter_counts(queue_platform)
    assert {reason: after.get(reason, 0) - before.get(reason, 0) for reason in expected} == dict.fromkeys(expected, 1)
    assert account.details()["usage"]["deadLetters"] == 6
    with account.client() as client:
        assert list(client.results(idle_timeout=2)) == [], "nothing is answered to an untrusted sender"


def _dead_letter_counts(queue_platform: QueuePlatform) -> dict[str, int]:
    response = queue_platform.admin("GET", "/api/admin/queue-api/dead-letters")
    assert response.status_code == 200, response.text
    return response.json()["data"]["counts"]


def test_progress_replies_and_a_full_account_waiting_its_turn(queue_platform: QueuePlatform):
    account = queue_platform.service_account(budget=200, maxActiveJobs=1)
    with account.client() as client:
        ids = [client.submit("text2img", {**PARAMS, "steps": 10}, progress=True) for _ in range(3)]
    replies = final_replies(account, set(ids))
    for request_id in ids:
        kinds = [reply["type"] for reply in replies[request_id]]
        assert kinds[0] == "request.accepted" and kinds[-1] == "job.succeeded", kinds
        percents = [reply["data"]["percent"] for reply in replies[request_id] if reply["type"] == "job.progress"]
        assert percents and percents == sorted(percents)
    listed = queue_platform.admin("GET", "/api/admin/jobs", params={"pageSize": 100}).json()["data"]["items"]
    jobs = sorted((job for job in listed if job["userId"] == account.id), key=lambda job: job["createdAt"])
    assert len(jobs) == 3
    for earlier, later in zip(jobs, jobs[1:]):
        assert later["createdAt"] >= earlier["finishedAt"], "one job at a time: the others waited in the queue"


def test_a_service_account_api_token_renders_over_http_within_its_limits(queue_platform: QueuePlatform):
    account = queue_platform.service_account(budget=100, allowedWorkflows=["text2img"])
    created = queue_platform.admin("POST", "/api/tokens", json={
        "name": "cms", "scopes": ["generate", "credits:read"], "userId": account.id})
    assert created.status_code == 201, created.text
    headers = {"Authorization": f"Bearer {created.json()['data']['token']}"}
    admitted = requests.post(queue_platform.url("/api/generate"), headers=headers, json=PARAMS, timeout=10)
    assert admitted.status_code == 202, admitted.text
    forbidden = requests.post(queue_platform.url("/api/generate"), headers=headers, timeout=10,
                              json={"workflow": "upscale", "sourceImage": "upload:x"})
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "WORKFLOW_NOT_ALLOWED"
    balance = requests.get(queue_platform.url("/api/users/credits"), headers=headers, timeout=10)
    assert balance.status_code == 200 and balance.json()["data"]["available"] == 100 - PRICE, "held or spent"
    profile = requests.get(queue_platform.url("/api/users/profile"), headers=headers, timeout=10)
    assert profile.status_code == 403 and profile.json()["error"]["code"] == "INSUFFICIENT_SCOPE"


def test_a_job_cancelled_over_http_is_answered_cancelled_on_the_queue(queue_platform: QueuePlatform):
    account = queue_platform.service_account(budget=100)
    token = queue_platform.admin("POST", "/api/tokens", json={"name": "ops", "scopes": ["generate"],
                                                              "userId": account.id}).json()["data"]["token"]
    with account.client() as client:
        request_id = client.submit("text2img", {**PARAMS, "steps": 100}, progress=True, metadata={"run": 7})
        replies = []
        for reply in client.results(idle_timeout=30):
            replies.append(reply)
            if reply["type"] == "job.progress":  # running now: cancel it over HTTP with the account's token
                cancelled = requests.delete(queue_platform.url(f"/api/jobs/{reply['jobId']}"), timeout=10,
                                            headers={"Authorization": f"Bearer {token}"})
                assert cancelled.status_code == 200, cancelled.text
                break
        replies.extend(client.results(idle_timeout=5))
    finals = [reply for reply in replies if reply["type"] in FINAL_TYPES]
    assert [reply["type"] for reply in finals] == ["job.cancelled"], [reply["type"] for reply in replies]
    (outcome,) = finals
    assert not schema_errors("queue-reply.v1.json", outcome), outcome
    assert outcome["requestId"] == request_id and outcome["metadata"] == {"run": 7}
    assert outcome["data"]["charged"] == 0 and outcome["data"]["refunded"] == PRICE
    assert _settled(account, 100) == {"available": 100, "held": 0, "granted": 100, "spent": 0}
    assert _usage(account, "cancelled", 1)["cancelled"] == 1


def test_a_job_that_fails_is_answered_job_failed_and_refunded(queue_platform: QueuePlatform):
    account = queue_platform.service_account(budget=100)
    with emulator_fault(queue_platform, "CUDA out of memory"):
        with account.client() as client:
            request_id = client.submit("text2img", PARAMS, metadata={"run": 8})
        replies = final_replies(account, {request_id})[request_id]
    (outcome,) = [reply for reply in replies if reply["type"] in FINAL_TYPES]
    assert outcome["type"] == "job.failed" and not schema_errors("queue-reply.v1.json", outcome), outcome
    assert outcome["metadata"] == {"run": 8}
    error = outcome["data"]["error"]
    assert error["code"] == "EXECUTION_ERROR" and error["class"] == "system" and "CUDA out of memory" in error["message"]
    assert outcome["data"]["charged"] == 0 and outcome["data"]["refunded"] == PRICE
    assert _settled(account, 100) == {"available": 100, "held": 0, "granted": 100, "spent": 0}
    assert _usage(account, "failed", 1)["failed"] == 1
