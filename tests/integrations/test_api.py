"""The integrations API with the real auth and credits services over HTTP: service accounts
(creation with a budget and credentials shown once, listing with usage and spend, limits,
key rotation, top-ups), webhook endpoints (who may manage which, the URL guard), the
internal limits lookup, and what integrators receive when a job's outcome is announced twice."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

import pytest
from flask import Flask
from kombu import Connection

from services.auth.app import create_app as create_auth_app
from services.auth.config import load_config as load_auth_config
from services.credits.app import create_app as create_credits_app
from services.integrations.bridge import AccountDirectory, FlowControl, OutcomeRelay, ProgressRelay
from services.integrations.broker import Broker
from services.integrations.contract import QueueNames
from services.integrations.deliveries import Deliveries
from services.integrations.models import WebhookDelivery
from services.integrations.outcomes import JobOutcomes
from services.integrations.app import create_app as create_integrations_app
from services.integrations.config import load_config as load_integrations_config
from shared.config import load_settings
from shared.embedded import free_port
from shared.events import PLATFORM_STREAM, EventBus
from shared.tokens import ensure_dev_keys
from tests.conftest import TEST_SERVICE_TOKEN, serve

PASSWORD = "secret123"
HEADERS = {"X-Service-Token": TEST_SERVICE_TOKEN}


class LateApp:
    app: Flask | None = None

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


@dataclass
class Person:
    id: int
    token: str


class World:
    def __init__(self, apps: dict[str, Flask]) -> None:
        self.apps = apps

    def call(self, service: str, method: str, path: str, person: Person | None = None, **kwargs: Any):
        headers = dict(HEADERS)
        if person is not None:
            headers["Authorization"] = f"Bearer {person.token}"
        with self.apps[service].test_client().open(path, method=method, headers=headers, **kwargs) as response:
            response.get_data()
            return response

    def person(self, role: str = "user") -> Person:
        name = f"p{uuid.uuid4().hex[:12]}"
        self.apps["auth"].extensions["auth"].create_user(name, f"{name}@example.com", PASSWORD, role=role)
        data = self.call("auth", "POST", "/api/users/login", json={"username": name, "password": PASSWORD}).json["data"]
        return Person(data["user"]["id"], data["accessToken"])

    def create(self, admin: Person, **fields: Any):
        body = {"name": f"s{uuid.uuid4().hex[:12]}", "ownerId": admin.id, **fields}
        return self.call("integrations", "POST", "/api/admin/service-accounts", admin, json=body)


@pytest.fixture(scope="module")
def world(database_url, redis_url, keys_dir, tmp_path_factory) -> Iterator[World]:
    servers = {name: LateApp() for name in ("auth", "credits")}
    running = {name: serve(app) for name, app in servers.items()}
    env = {"APP_ENV": "test", "DATA_DIR": str(tmp_path_factory.mktemp("integrations") / "data"),
           "DATABASE_URL": database_url, "REDIS_URL": redis_url, "SERVICE_TOKEN": TEST_SERVICE_TOKEN,
           "JWT_PRIVATE_KEY_PATH": str(keys_dir / "jwt_private.pem"),
           "JWT_PUBLIC_KEY_PATH": str(keys_dir / "jwt_public.pem"),
           "AUTH_URL": running["auth"].url, "CREDITS_URL": running["credits"].url,
           "GALLERY_URL": f"http://127.0.0.1:{free_port()}", "QUEUE_API_PREFIX": "qa"}
    settings = load_settings(env)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_dev_keys(settings)
    apps = {"auth": create_auth_app(settings, load_auth_config(settings, env)), "credits": create_credits_app(settings),
            "integrations": create_integrations_app(settings, load_integrations_config(settings, env))}
    for name, late in servers.items():
        late.app = apps[name]
    yield World(apps)
    for server in running.values():
        server.stop()
    for app in apps.values():
        app.extensions["db"].dispose()
        app.extensions["redis"].close()


def test_an_admin_creates_a_service_account_with_a_budget_and_gets_its_credentials_once(world: World):
    admin = world.person("admin")
    created = world.create(admin, budget=300, allowedWorkflows=["text2img"], maxActiveJobs=3, urlTtlSeconds=600,
                           description="banners overnight")
    assert created.status_code == 201, created.json
    account, credentials = created.json["data"]["serviceAccount"], created.json["data"]["credentials"]
    name = account["name"]
    assert credentials == {"keyId": account["keyId"], "secret": credentials["secret"], "exchange": "qa",
                           "requestQueue": f"qa.{name}.requests", "replyQueue": f"qa.{name}.replies",
                           "deadLetterQueue": "qa.dead-letter"}
    assert credentials["secret"].startswith("qsec_")
    assert account["credits"] == {"available": 300, "held": 0, "granted": 300, "spent": 0}
    assert (account["allowedWorkflows"], account["maxActiveJobs"], account["urlTtlSeconds"]) == (["text2img"], 3, 600)
    assert account["lane"] == "batch", "an account's jobs wait in the batch lane unless an administrator says otherwise"
    assert account["usage"] == {} and account["isActive"] is True

    shown = world.call("integrations", "GET", f"/api/admin/service-accounts/{account['id']}", admin).json["data"]
    assert "secret" not in str(shown), "the secret is never shown again"
    listed = world.call("integrations", "GET", "/api/admin/service-accounts?pageSize=100", admin).json["data"]
    assert account["id"] in {item["id"] for item in listed["items"]}

    ledger = world.call("credits", "GET", f"/api/admin/credits/accounts/{account['id']}/transactions",
                        admin).json["data"]["items"]
    assert [(row["type"], row["amount"]) for row in reversed(ledger)] == [("signup_bonus", 0), ("admin_grant", 300)]
    user = world.call("auth", "GET", f"/internal/users/{account['id']}").json["data"]
    assert user["kind"] == "service" and user["username"] == name


def test_limits_key_rotation_and_top_ups(world: World):
    admin = world.person("admin")
    account = world.create(admin).json["data"]
    user_id, old = account["serviceAccount"]["id"], account["credentials"]
    limits = world.call("integrations", "GET", f"/internal/service-accounts/{user_id}/limits").json["data"]
    assert limits == {"maxActiveJobs": 8, "workflows": None, "lane": "batch", "isActive": True}, "the defaults"
    updated = world.call("integrations", "PUT", f"/api/admin/service-accounts/{user_id}", admin,
                         json={"maxActiveJobs": 2, "allowedWorkflows": ["upscale"], "lane": "interactive",
                               "isActive": False})
    assert updated.status_code == 200
    limits = world.call("integrations", "GET", f"/internal/service-accounts/{user_id}/limits").json["data"]
    assert limits == {"maxActiveJobs": 2, "workflows": ["upscale"], "lane": "interactive", "isActive": False}
    assert world.call("integrations", "PUT", f"/api/admin/service-accounts/{user_id}", admin, json={}).status_code == 422
    no_lane = world.call("integrations", "PUT", f"/api/admin/service-accounts/{user_id}", admin, json={"lane": "vip"})
    assert no_lane.status_code == 422 and "lane" in no_lane.json["error"]["details"]

    rotated = world.call("integrations", "POST", f"/api/admin/service-accounts/{user_id}/key", admin).json["data"]
    assert rotated["credentials"]["keyId"] != old["keyId"] and rotated["credentials"]["secret"] != old["secret"]
    assert rotated["credentials"]["requestQueue"] == old["requestQueue"]
    key_path = f"/api/admin/service-accounts/{user_id}/key"
    graced = world.call("integrations", "POST", key_path, admin, json={"graceSeconds": 3600}).json["data"]
    shown = world.call("integrations", "GET", f"/api/admin/service-accounts/{user_id}", admin).json["data"]
    assert shown["serviceAccount"]["keyId"] == graced["credentials"]["keyId"]
    assert shown["serviceAccount"]["previousKey"]["keyId"] == rotated["credentials"]["keyId"]
    abrupt = world.call("integrations", "POST", key_path, admin, json={}).json["data"]
    shown = world.call("integrations", "GET", f"/api/admin/service-accounts/{user_id}", admin).json["data"]
    assert shown["serviceAccount"]["keyId"] == abrupt["credentials"]["keyId"] and shown["serviceAccount"]["previousKey"] is None
    too_long = world.call("integrations", "POST", key_path, admin, json={"graceSeconds": 8 * 86400})
    assert too_long.status_code == 422 and "graceSeconds" in too_long.json["error"]["details"]

    path = f"/api/admin/service-accounts/{user_id}/budget"
    granted = world.call("integrations", "POST", path, admin, json={"amount": 50, "reason": "June", "idempotencyKey": "june"})
    assert granted.status_code == 200 and granted.json["data"]["available"] == 50
    again = world.call("integrations", "POST", path, admin, json={"amount": 50, "reason": "June", "idempotencyKey": "june"})
    assert again.json["data"]["available"] == 50, "a top-up with the same key is granted once"
    conflict = world.call("integrations", "POST", path, admin, json={"amount": 60, "reason": "x", "idempotencyKey": "june"})
    assert conflict.status_code == 409 and conflict.json["error"]["code"] == "IDEMPOTENCY_CONFLICT"


def test_creation_refusals(world: World):
    admin, person = world.person("admin"), world.person()
    name = f"s{uuid.uuid4().hex[:12]}"
    assert world.create(admin, name=name).status_code == 201
    duplicate = world.create(admin, name=name)
    assert duplicate.status_code == 409 and duplicate.json["error"]["code"] == "SERVICE_ACCOUNT_EXISTS"
    taken = world.create(admin, name=world.call("auth", "GET", f"/internal/users/{person.id}").json["data"]["username"])
    assert taken.status_code == 409 and taken.json["error"]["code"] == "USERNAME_TAKEN"
    ownerless = world.create(admin, ownerId=2**62)
    assert ownerless.status_code == 422 and ownerless.json["error"]["code"] == "OWNER_NOT_FOUND"
    for fields in ({"name": "Upper"}, {"name": "ab"}, {"name": "a-b-c"}, {"budget": -1}, {"maxActiveJobs": 0},
                   {"urlTtlSeconds": 10}, {"allowedWorkflows": []}, {"unknown": 1}):
        assert world.create(admin, **fields).status_code == 422, fields
    assert world.create(person).status_code == 403
    missing = world.call("integrations", "GET", "/api/admin/service-accounts/999999999", admin)
    assert missing.status_code == 404 and missing.json["error"]["code"] == "SERVICE_ACCOUNT_NOT_FOUND"


def test_webhook_endpoints_belong_to_their_user_or_to_a_service_account(world: World):
    admin, owner, other = world.person("admin"), world.person(), world.person()
    refused = world.call("integrations", "POST", "/api/webhooks", owner,
                         json={"url": "http://127.0.0.1:9/hook", "events": ["job.failed"]})
    assert refused.status_code == 422 and refused.json["error"]["code"] == "WEBHOOK_URL_REFUSED", \
        "loopback is refused unless WEBHOOK_ALLOW_PRIVATE"
    made = world.call("integrations", "POST", "/api/webhooks", owner,
                      json={"url": "https://93.184.216.34/hook", "events": ["job.failed", "credits.low", "job.failed"]})
    assert made.status_code == 201
    hook = made.json["data"]["webhook"]
    assert hook["events"] == ["credits.low", "job.failed"] and made.json["data"]["secret"].startswith("whsec_")
    assert world.call("integrations", "GET", "/api/webhooks", other).json["data"]["items"] == []
    for who in (other, admin):
        gone = world.call("integrations", "DELETE", f"/api/webhooks/{hook['id']}", who)
        assert gone.status_code == 404 and gone.json["error"]["code"] == "WEBHOOK_NOT_FOUND"
    foreign = world.call("integrations", "GET", f"/api/webhooks?userId={owner.id}", admin)
    assert foreign.status_code == 403 and foreign.json["error"]["code"] == "NOT_A_SERVICE_ACCOUNT"
    assert world.call("integrations", "GET", f"/api/webhooks?userId={admin.id}", other).status_code == 403
    assert world.call("integrations", "POST", "/api/webhooks", owner,
                      json={"url": "https://93.184.216.34/", "events": ["job.started"]}).status_code == 422

    service = world.create(admin).json["data"]["serviceAccount"]["id"]
    for_service = world.call("integrations", "POST", "/api/webhooks", admin,
                             json={"url": "https://93.184.216.34/svc", "events": ["job.succeeded"], "userId": service})
    assert for_service.status_code == 201 and for_service.json["data"]["webhook"]["userId"] == service
    service_hook = for_service.json["data"]["webhook"]["id"]
    deliveries = world.call("integrations", "GET", f"/api/webhooks/{service_hook}/deliveries", admin)
    assert deliveries.status_code == 200 and deliveries.json["data"]["total"] == 0
    assert world.call("integrations", "DELETE", f"/api/webhooks/{service_hook}", admin).status_code == 200
    assert world.call("integrations", "DELETE", f"/api/webhooks/{hook['id']}", owner).status_code == 200
    assert world.call("integrations", "GET", "/api/webhooks", owner).json["data"]["items"] == []


def _announced_twice(world: World, user_id: int, job_id: str) -> tuple[list[dict], list[dict[str, str]]]:
    """Publish a job's final event twice, as its outbox does after a crash before recording it (the
    reconciler sends it again, settled by then): the two live events and the two announcements."""
    bus = EventBus(world.apps["integrations"].extensions["redis"])
    data = {"jobId": job_id, "images": 0, "charged": 0, "refunded": 30, "errorCode": "EXECUTION_ERROR",
            "errorClass": "system", "message": "out of memory"}
    live = [bus.publish(user_id, "job.failed", {**data, "settled": settled}, job_id=job_id) for settled in (False, True)]
    entries = bus.redis.xrevrange(PLATFORM_STREAM, count=1000)
    announced = [fields for _, fields in reversed(entries) if fields.get("jobId") == job_id]
    assert len(announced) == 2 and live[0]["id"] != live[1]["id"], "two stream entries: the event went out twice"
    return live, announced


def test_an_outcome_announced_twice_is_one_webhook_delivery_with_the_live_events_id(world: World):
    owner = world.person()
    made = world.call("integrations", "POST", "/api/webhooks", owner,
                      json={"url": "https://93.184.216.34/hook", "events": ["job.failed"]})
    assert made.status_code == 201
    hook = made.json["data"]["webhook"]["id"]
    endpoints = world.apps["integrations"].extensions["integrations_webhooks"]
    deliveries = Deliveries(world.apps["integrations"].extensions["db"], endpoints.config, endpoints.keys,
                            JobOutcomes(render=None, storage=None, public_url=""))  # job.failed names no images
    job_id = uuid.uuid4().hex
    live, announced = _announced_twice(world, owner.id, job_id)
    try:
        assert [deliveries.record(fields) for fields in announced] == [1, 0]
    finally:
        deliveries.close()

    listed = world.call("integrations", "GET", f"/api/webhooks/{hook}/deliveries", owner).json["data"]
    assert listed["total"] == 1, "the endpoint is sent the outcome once"
    with world.apps["integrations"].extensions["db"].read() as session:
        body = json.loads(session.get(WebhookDelivery, listed["items"][0]["id"]).payload)
    assert live[0]["eventId"] == live[1]["eventId"] == body["id"] == f"job.failed:{job_id}"
    assert (body["type"], body["data"]["refunded"]) == ("job.failed", 30)


def test_an_outcome_announced_twice_is_answered_once_on_the_queue(world: World):
    admin = world.person("admin")
    created = world.create(admin).json["data"]
    account, reply_queue = created["serviceAccount"]["id"], created["credentials"]["replyQueue"]
    db, redis = world.apps["integrations"].extensions["db"], world.apps["integrations"].extensions["redis"]
    requests = world.apps["integrations"].extensions["integrations_requests"]
    directory = AccountDirectory(db, world.apps["integrations"].extensions["integrations_webhooks"].keys)
    broker = Broker("memory://", QueueNames("qa"))
    relay = OutcomeRelay(directory, broker, requests, render=None, outcomes=JobOutcomes(None, None, ""),
                         flow=FlowControl(), progress=ProgressRelay(redis, directory, broker, requests))
    request_id, job_id = f"r-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    claim = requests.claim(account, request_id, reply_queue, {"sku": 42}, False)
    assert requests.admitted(claim.row_id, job_id, 30)

    _, announced = _announced_twice(world, account, job_id)
    for fields in announced:
        relay.handle(fields)
    replies = []
    with Connection("memory://") as connection:
        queue = broker.queue(reply_queue)(connection.default_channel)
        while (message := queue.get(no_ack=True)) is not None:
            replies.append(json.loads(message.body))
    broker.close()
    assert [(r["type"], r["messageId"], r["data"]["refunded"]) for r in replies] == [
        ("job.failed", f"{request_id}:outcome", 30)], "one reply, under the id integrators dedupe on"
