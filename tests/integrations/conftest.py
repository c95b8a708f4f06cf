"""The whole platform (``python -m deploy.local run``: gateway, auth, credits, gallery,
integrations with its queue bridge and webhook dispatcher, a render worker, the ComfyUI
emulator) once per broker (Redis; RabbitMQ when one answers), for the queue API and
webhook tests, and the people and service accounts they need."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

import pytest
import requests
from aigc_queue_client import QueueClient
from kombu import Connection, Exchange, Queue

from shared.config import PROJECT_ROOT
from tests.conftest import AMQP_URL, BROKERS, TEST_SERVICE_TOKEN
from tests.platform import Platform, start_platform

T = TypeVar("T")

PASSWORD = "queue-admin-1"
MODEL = "sd15_demo.safetensors"
# Small, quick renders on the emulator.
PARAMS = {"prompt": "a summer sale banner", "model": MODEL, "size": "64x64", "steps": 4}
PRICE = 15  # text2img, per image (CREDITS_PRICING's default)


@dataclass
class QueuePlatform:
    platform: Platform
    broker: str
    broker_url: str
    prefix: str
    admin_token: str
    admin_id: int
    queues: set[str] = field(default_factory=set)  # every queue this run used, removed at the end

    def url(self, path: str) -> str:
        return self.platform.url(path)

    def wait_for(self, predicate: Callable[[], T], timeout: float, what: str) -> T:
        """``predicate``'s first true value; failing with the platform's log after ``timeout``."""
        return self.platform.wait_for(predicate, timeout, what)

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, self.url(path), headers={"Authorization": f"Bearer {self.admin_token}"},
                                timeout=30, **kwargs)

    def service_account(self, budget: int, **settings: Any) -> "ServiceAccount":
        name = f"svc_{uuid.uuid4().hex[:10]}"
        response = self.admin("POST", "/api/admin/service-accounts", json={
            "name": name, "ownerId": self.admin_id, "budget": budget, **settings})
        assert response.status_code == 201, response.text
        data = response.json()["data"]
        self.queues |= {data["credentials"]["requestQueue"], data["credentials"]["replyQueue"],
                        data["credentials"]["deadLetterQueue"]}
        return ServiceAccount(self, data["serviceAccount"]["id"], name, data["credentials"])

    def flask(self, app: str, *args: str) -> subprocess.CompletedProcess:
        """An operator command of a service, run in the platform's environment."""
        return subprocess.run([sys.executable, "-m", "flask", "--app", app, *args], env=self.platform.env,
                              cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)

    def queue(self, name: str) -> Queue:
        self.queues.add(name)
        return Queue(name, exchange=Exchange(self.prefix, type="direct", durable=True), routing_key=name, durable=True)

    def drain(self, queue_name: str) -> list[dict[str, Any]]:
        """Every message now in ``queue_name``, taken off it."""
        messages = []
        with Connection(self.broker_url) as connection:
            bound = self.queue(queue_name)(connection.default_channel)
            bound.declare()
            while (message := bound.get(no_ack=True)) is not None:
                messages.append(json.loads(message.body))
        return messages

    def delete_queues(self) -> None:
        """RabbitMQ keeps durable queues and exchanges: remove this run's."""
        with Connection(self.broker_url) as connection:
            for name in self.queues:
                self.queue(name)(connection.default_channel).delete()
            Exchange(self.prefix, type="direct")(connection.default_channel).delete()


@dataclass
class ServiceAccount:
    platform: QueuePlatform
    id: int
    name: str
    credentials: dict[str, Any]

    def client(self) -> QueueClient:
        return QueueClient(self.platform.broker_url, self.name, self.credentials["keyId"],
                           self.credentials["secret"], self.platform.prefix)

    def details(self) -> dict[str, Any]:
        response = self.platform.admin("GET", f"/api/admin/service-accounts/{self.id}")
        assert response.status_code == 200, response.text
        return response.json()["data"]["serviceAccount"]

    def ledger(self) -> list[tuple[str, int, int]]:
        """The account's ledger, oldest first."""
        items: list[dict] = []
        for page in range(1, 100):
            response = self.platform.admin("GET", f"/api/admin/credits/accounts/{self.id}/transactions",
                                           params={"pageSize": 100, "page": page})
            assert response.status_code == 200, response.text
            items += response.json()["data"]["items"]
            if len(items) >= response.json()["data"]["total"]:
                break
        return [(item["type"], item["amount"], item["heldChange"]) for item in reversed(items)]


@pytest.fixture(scope="module", params=BROKERS)
def queue_platform(request, tmp_path_factory, redis_url, keys_dir, platform_database_url) -> Iterator[QueuePlatform]:
    broker = request.param
    prefix = f"queue-api-test-{uuid.uuid4().hex[:8]}"
    env = {"APP_ENV": "test", "DATABASE_URL": platform_database_url, "REDIS_URL": redis_url,
           "SERVICE_TOKEN": TEST_SERVICE_TOKEN, "JWT_PRIVATE_KEY_PATH": str(keys_dir / "jwt_private.pem"),
           "JWT_PUBLIC_KEY_PATH": str(keys_dir / "jwt_public.pem")}
    extra = {"EMULATOR_STEP_DELAY": "0.02", "QUEUE_API_PREFIX": prefix, "WEBHOOK_ALLOW_PRIVATE": "true",
             "WEBHOOK_RETRY_BASE_SECONDS": "1", "WEBHOOK_GIVE_UP_SECONDS": "6", "API_TOKEN_CACHE_SECONDS": "60"}
    if broker == "rabbitmq":
        extra["BROKER_URL"] = AMQP_URL
    with start_platform(tmp_path_factory, env, platform_database_url, **extra) as platform:
        broker_url = platform.env.get("BROKER_URL") or platform.env["REDIS_URL"]
        name = f"adm{uuid.uuid4().hex[:10]}"
        created = subprocess.run([sys.executable, "-m", "flask", "--app", "services.auth.app:create_app", "auth",
                                  "create-admin", name, f"{name}@example.com", "--password", PASSWORD],
                                 env=platform.env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
        assert created.returncode == 0, created.stderr
        login = requests.post(platform.url("/api/users/login"), json={"username": name, "password": PASSWORD},
                              timeout=10)
        assert login.status_code == 200, login.text
        data = login.json()["data"]
        running = QueuePlatform(platform, broker, broker_url, prefix, data["accessToken"], data["user"]["id"])
        yield running
        running.delete_queues()


@contextmanager
def emulator_fault(queue_platform: QueuePlatform, message: str) -> Iterator[None]:
    """Every prompt the platform's ComfyUI emulator runs meanwhile fails with ``message``."""
    config = queue_platform.platform.env["COMFYUI_URL"] + "/emulator/config"
    requests.post(config, json={"faults": {"execution_error": message, "persistent": True}},
                  timeout=5).raise_for_status()
    try:
        yield
    finally:
        requests.post(config, json={"faults": {"execution_error": None, "persistent": False}},
                      timeout=5).raise_for_status()
