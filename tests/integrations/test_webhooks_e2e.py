"""Signed webhooks end to end: a test receiver gets job outcomes and credits.low, verifies
their signatures, answers 500s (the delivery is retried with back-off) and keeps failing
(the delivery is given up, then re-sent from the API); a cancelled and a failed job are
delivered as job.cancelled and job.failed. The platform retries after 1, 2, 4 s and gives up
after 6 s here (WEBHOOK_RETRY_BASE_SECONDS, WEBHOOK_GIVE_UP_SECONDS)."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import pytest
import requests
from aigc_queue_client import verify_webhook
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from services.integrations.contract import schema_errors
from tests.integrations.conftest import PARAMS, PRICE, QueuePlatform, emulator_fault

pytestmark = pytest.mark.e2e


@dataclass
class Receiver:
    """Answers each path with its planned statuses (then 200), recording every call."""

    plans: dict[str, list[int]] = field(default_factory=dict)
    calls: dict[str, list[tuple[dict[str, str], bytes]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def __call__(self, environ, start_response):
        request = Request(environ)
        with self.lock:
            self.calls.setdefault(request.path, []).append((dict(request.headers), request.get_data()))
            plan = self.plans.get(request.path, [])
            status = plan.pop(0) if plan else 200
        return Response("ok", status=status)(environ, start_response)

    def received(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return list(self.calls.get(path, []))


@pytest.fixture
def receiver(queue_platform: QueuePlatform):
    if queue_platform.broker != "redis":
        pytest.skip("webhooks do not depend on the broker: tested once")
    app = Receiver()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    app.url = f"http://127.0.0.1:{server.server_port}"
    yield app
    server.shutdown()
    server.server_close()


def test_deliveries_are_signed_retried_given_up_and_resent(queue_platform: QueuePlatform, receiver: Receiver):
    account = queue_platform.service_account(budget=100)
    receiver.plans = {"/flaky": [500, 500], "/down": [500] * 100}
    hooks = {}
    for path, events in (("/ok", ["job.succeeded", "credits.low"]), ("/flaky", ["job.succeeded"]),
                         ("/down", ["job.succeeded"]), ("/failures", ["job.failed"])):
        created = queue_platform.admin("POST", "/api/webhooks", json={
            "url": receiver.url + path, "events": events, "userId": account.id})
        assert created.status_code == 201, created.text
        hooks[path] = created.json()["data"]
    assert hooks["/ok"]["secret"].startswith("whsec_") and "secret" not in hooks["/ok"]["webhook"]
    listed = queue_platform.admin("GET", "/api/webhooks", params={"userId": account.id}).json()["data"]["items"]
    assert {hook["url"] for hook in listed} == {receiver.url + path for path in hooks}

    with account.client() as client:
        client.submit("text2img", PARAMS)

    calls = queue_platform.wait_for(lambda: len(receiver.received("/ok")) >= 2 and receiver.received("/ok"), 30,
                                    "two events at /ok")
    events = {}
    for headers, body in calls:
        assert verify_webhook(hooks["/ok"]["secret"], headers, body), "signed with the endpoint's secret"
        assert not verify_webhook(hooks["/flaky"]["secret"], headers, body)
        assert headers["X-Webhook-Key-Id"] == hooks["/ok"]["webhook"]["keyId"]
        event = json.loads(body)
        assert not schema_errors("webhook-event.v1.json", event), event
        assert headers["X-Webhook-Event"] == event["type"] and event["userId"] == account.id
        events[event["type"]] = event
    assert events["credits.low"]["data"] == {"available": 100 - PRICE, "threshold": 100}
    succeeded = events["job.succeeded"]["data"]
    assert succeeded["charged"] == PRICE and len(succeeded["images"]) == 1
    assert requests.get(succeeded["images"][0]["url"], timeout=10).status_code == 200
    tampered = calls[0][1].replace(b'"userId"', b'"userid"')
    assert not verify_webhook(hooks["/ok"]["secret"], calls[0][0], tampered)

    flaky = queue_platform.wait_for(lambda: _deliveries(queue_platform, hooks["/flaky"])[0]["status"] == "succeeded"
                                    and _deliveries(queue_platform, hooks["/flaky"]), 30,
                                    "the flaky endpoint to be served")
    assert flaky[0]["attempts"] == 3 and flaky[0]["lastStatusCode"] == 200
    flaky_calls = receiver.received("/flaky")
    assert len(flaky_calls) == 3 and len({headers["X-Webhook-Id"] for headers, _ in flaky_calls}) == 1
    assert len({body for _, body in flaky_calls}) == 1, "every retry sends the same event"

    down = queue_platform.wait_for(lambda: _deliveries(queue_platform, hooks["/down"])[0]["status"] == "failed"
                                   and _deliveries(queue_platform, hooks["/down"]), 30,
                                   "the dead endpoint to be given up")
    assert down[0]["attempts"] >= 3 and down[0]["lastStatusCode"] == 500
    assert down[0]["lastError"] == "The endpoint answered 500." and down[0]["nextAttemptAt"] is None
    attempts = len(receiver.received("/down"))
    time.sleep(2)
    assert len(receiver.received("/down")) == attempts, "a given-up delivery is not tried again by itself"

    receiver.plans["/down"] = []
    resent = queue_platform.admin(
        "POST", f"/api/webhooks/{hooks['/down']['webhook']['id']}/deliveries/{down[0]['id']}/redeliver")
    assert resent.status_code == 200 and resent.json()["data"]["delivery"]["status"] == "pending"
    queue_platform.wait_for(lambda: _deliveries(queue_platform, hooks["/down"])[0]["status"] == "succeeded", 15,
                            "the re-sent delivery")
    assert receiver.received("/failures") == [], "nobody asked for job.failed"

    deleted = queue_platform.admin("DELETE", f"/api/webhooks/{hooks['/ok']['webhook']['id']}")
    assert deleted.status_code == 200
    assert len(queue_platform.admin("GET", "/api/webhooks", params={"userId": account.id}).json()["data"]["items"]) == 3


def _deliveries(queue_platform: QueuePlatform, hook: dict) -> list[dict]:
    response = queue_platform.admin("GET", f"/api/webhooks/{hook['webhook']['id']}/deliveries")
    assert response.status_code == 200, response.text
    return response.json()["data"]["items"] or [{"status": None}]


def test_a_cancelled_job_is_delivered_as_job_cancelled(queue_platform: QueuePlatform, receiver: Receiver):
    account = queue_platform.service_account(budget=100)
    hook = queue_platform.admin("POST", "/api/webhooks", json={
        "url": receiver.url + "/cancelled", "events": ["job.cancelled"], "userId": account.id}).json()["data"]
    token = queue_platform.admin("POST", "/api/tokens", json={"name": "ops", "scopes": ["generate"],
                                                              "userId": account.id}).json()["data"]["token"]
    headers = {"Authorization": f"Bearer {token}"}
    job = requests.post(queue_platform.url("/api/generate"), headers=headers, json={**PARAMS, "steps": 100}, timeout=10)
    assert job.status_code == 202, job.text
    job_id = job.json()["data"]["job"]["id"]
    cancelled = requests.delete(queue_platform.url(f"/api/jobs/{job_id}"), headers=headers, timeout=10)
    assert cancelled.status_code == 200, cancelled.text

    (headers_sent, body), = queue_platform.wait_for(lambda: receiver.received("/cancelled"), 30,
                                                    "the job.cancelled delivery")
    assert verify_webhook(hook["secret"], headers_sent, body)
    event = json.loads(body)
    assert not schema_errors("webhook-event.v1.json", event), event
    assert (event["type"], event["userId"], event["data"]["jobId"]) == ("job.cancelled", account.id, job_id)
    assert event["data"]["charged"] == 0 and event["data"]["refunded"] == PRICE


def test_a_failed_job_is_delivered_as_job_failed(queue_platform: QueuePlatform, receiver: Receiver):
    account = queue_platform.service_account(budget=100)
    hook = queue_platform.admin("POST", "/api/webhooks", json={
        "url": receiver.url + "/failed", "events": ["job.failed"], "userId": account.id}).json()["data"]
    with emulator_fault(queue_platform, "CUDA out of memory"):
        with account.client() as client:
            client.submit("text2img", PARAMS)
        (headers_sent, body), = queue_platform.wait_for(lambda: receiver.received("/failed"), 30,
                                                        "the job.failed delivery")
    assert verify_webhook(hook["secret"], headers_sent, body)
    event = json.loads(body)
    assert not schema_errors("webhook-event.v1.json", event), event
    assert (event["type"], event["userId"]) == ("job.failed", account.id)
    assert event["data"]["error"]["code"] == "EXECUTION_ERROR" and event["data"]["error"]["class"] == "system"
    assert event["data"]["charged"] == 0 and event["data"]["refunded"] == PRICE
