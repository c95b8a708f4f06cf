"""A private render stack per test module: its own redis-server and database (SQLite unless
given another); as subprocesses started the way ``make run`` starts them
(``deploy.local.service_commands``): credits, the gateway, the reconciler, the scheduler and, on demand,
the gallery; plus ComfyUI emulators and render workers
(``python -m services.render_worker --comfyui URL``).

The private Redis keeps these tests away from the shared one (other sessions flush it)
and lets a test restart Redis. Timings are shortened through the render settings
(heartbeat 1 s, reconciler 1 s, lost-message grace 2 s). Every module runs once per Celery
broker: the private Redis, and RabbitMQ when one answers (``TEST_AMQP_URL``).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import jwt
import pytest
import requests
import websocket
from sqlalchemy import text

from deploy.local import service_commands
from services.credits.client import CreditsClient
from shared.config import PROJECT_ROOT, Settings, load_settings
from shared.db import Database
from shared.embedded import free_port, redis_answers, redis_server_binary, redis_server_command
from shared.migrate import SERVICES, upgrade
from shared.tokens import ensure_dev_keys
from tests.conftest import AMQP_URL, BROKERS

pytestmark = pytest.mark.e2e
SERVICE_TOKEN = "render-e2e-service-token"
MODEL = "sd15_demo.safetensors"
# What a render worker logs once its heartbeat and catalog are published (services.render_worker.worker).
READY_LINE = " serving ["


class RedisServer:
    def __init__(self, data_dir: Path) -> None:
        self.binary = redis_server_binary()
        if self.binary is None:
            pytest.skip("no redis-server binary")
        self.port = free_port()
        self.data_dir = data_dir
        self.directory = data_dir / "data"
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self, fresh: bool = False) -> None:
        """Start on the same port, from the data folder of the last start (its append-only file),
        or ``fresh`` from an empty one: a Redis that lost everything."""
        if fresh:
            self.directory = self.data_dir / uuid.uuid4().hex[:6]
        self.proc = subprocess.Popen(redis_server_command(self.binary, self.port, self.directory),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(lambda: redis_answers(self.url), 10, "redis-server to start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def send(self, sig: int) -> None:
        """Signal the process group without waiting (SIGSTOP, SIGCONT)."""
        os.killpg(self.proc.pid, sig)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process group and wait until the process is gone (SIGKILL after 15 s)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


def _wait(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out waiting for {what}")


@dataclass
class Stack:
    tmp: Path
    redis: RedisServer
    settings: Settings
    env: dict[str, str]
    services: dict[str, Proc] = field(default_factory=dict)
    emulators: dict[str, tuple[Proc, str]] = field(default_factory=dict)
    workers: dict[str, Proc] = field(default_factory=dict)
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    # -- processes --------------------------------------------------------------------
    @property
    def credits_url(self) -> str:
        return self.settings.credits_url

    def start_service(self, name: str) -> Proc:
        """Start one of ``make run``'s processes (``credits``, ``gallery``, ``reconciler``, …) and
        wait until it answers (a web service) or has run for a moment (the others)."""
        log = self.tmp / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(service_commands(self.settings)[name], cwd=PROJECT_ROOT,
                                    env={**os.environ, **self.env}, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        service = self.services[name] = Proc(name, proc, log)
        # The gateway's /readyz wants auth and the gallery too; it serves the render API without them.
        probe = {"credits": self.settings.credits_url + "/readyz", "gallery": self.settings.gallery_url + "/readyz",
                 "gateway": self.gateway("/healthz")}.get(name)
        if probe:
            _wait(lambda: _answers(probe) or proc.poll() is not None, 30, f"{name} to answer")
        else:
            time.sleep(0.5)
        assert proc.poll() is None, service.output()[-3000:]
        return service

    def stop_service(self, name: str, sig: int = signal.SIGTERM) -> None:
        self.services.pop(name).kill(sig)

    def start_emulator(self, name: str, *args: str, port: int | None = None) -> str:
        """Start emulator ``name`` (again, on its old ``port`` after it died: a ComfyUI restart)."""
        port = port or free_port()
        log = self.tmp / f"emulator-{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "services.comfyui_emulator", "--port", str(port),
                                     "--data-dir", str(self.tmp / f"comfy-{name}"), "--step-delay", "0.02",
                                     "--load-delay", "0.01", *args], cwd=PROJECT_ROOT, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: _answers(url + "/system_stats"), 20, f"emulator {name}")
        self.emulators[name] = (Proc(name, proc, log), url)
        return url

    def emulator_url(self, name: str) -> str:
        return self.emulators[name][1]

    def configure(self, name: str, **update: Any) -> None:
        requests.post(self.emulator_url(name) + "/emulator/config", json=update, timeout=5).raise_for_status()

    def worker_name(self, name: str) -> str:
        """The ``--name`` of the test's worker ``name``: with this stack's run id, so two test sessions on
        one RabbitMQ never start the same Celery node (its pidbox queue is exclusive: RESOURCE_LOCKED)
        nor take each other's remote-control commands (a drain pauses consumers by node name)."""
        return f"{name}-{self.run}"

    def name_of(self, worker_id: str | None) -> str | None:
        """The test's name of worker ``worker_id`` (``<--name>@<host>#<boot>``, as a job or the catalog
        names it); None when it is not one of this stack's."""
        node = (worker_id or "").partition("@")[0]
        return node.removesuffix(f"-{self.run}") if node.endswith(f"-{self.run}") else None

    def start_worker(self, name: str, emulator: str, **env: str) -> Proc:
        """Start worker ``name`` and wait until it serves (its heartbeat and catalog are published)."""
        log = self.tmp / f"worker-{name}.log"
        served_before = log.read_text(errors="replace").count(READY_LINE) if log.exists() else 0
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "services.render_worker", "--comfyui",
                                     self.emulator_url(emulator), "--name", self.worker_name(name),
                                     "--loglevel", "INFO"],
                                    cwd=PROJECT_ROOT, env={**os.environ, **self.env, **env}, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        worker = Proc(name, proc, log)
        self.workers[name] = worker
        _wait(lambda: worker.output().count(READY_LINE) > served_before or proc.poll() is not None, 60,
              f"worker {name} to join")
        assert proc.poll() is None, worker.output()[-3000:]
        return worker

    def catalog_of(self, name: str) -> dict | None:
        models = requests.get(self.gateway("/api/models"), timeout=5).json()["data"]
        return next((w for w in models["workers"] if self.name_of(w["workerId"]) == name), None)

    def stop_worker(self, name: str, sig: int = signal.SIGTERM) -> None:
        self.workers.pop(name).kill(sig)

    # -- HTTP -------------------------------------------------------------------------
    def gateway(self, path: str) -> str:
        return f"http://127.0.0.1:{self.settings.gateway_port}{path}"

    def user(self) -> "User":
        user_id = random.randint(10**7, 10**9)
        CreditsClient(self.credits_url, SERVICE_TOKEN).open_account(user_id)
        now = dt.datetime.now(dt.timezone.utc)
        token = jwt.encode({"sub": str(user_id), "username": f"u{user_id}", "role": "user", "type": "access",
                            "jti": uuid.uuid4().hex, "iat": now, "exp": now + dt.timedelta(minutes=30)},
                           self.settings.jwt_private_key_path.read_text(), algorithm="RS256")
        return User(self, user_id, token)

    def sql(self, statement: str, **params: Any) -> list[tuple]:
        db = Database(self.settings.database_url)
        try:
            with db.engine.connect() as connection:
                return [tuple(row) for row in connection.execute(text(statement), params)]
        finally:
            db.dispose()


@dataclass
class User:
    stack: Stack
    id: int
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def generate(self, key: str | None = None, **body: Any) -> requests.Response:
        headers = dict(self.headers, **({"Idempotency-Key": key} if key else {}))
        payload = {"prompt": "a lighthouse at dusk", "model": MODEL, "size": "64x64", "steps": 6, **body}
        payload = {name: value for name, value in payload.items() if value is not None}  # None drops a default
        return requests.post(self.stack.gateway("/api/generate"), json=payload, headers=headers, timeout=15)

    def submit(self, **body: Any) -> str:
        response = self.generate(**body)
        assert response.status_code == 202, response.text
        return response.json()["data"]["job"]["id"]

    def job(self, job_id: str) -> dict:
        response = requests.get(self.stack.gateway(f"/api/jobs/{job_id}"), headers=self.headers, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    def wait(self, job_id: str, timeout: float = 30, statuses=("succeeded", "failed", "cancelled")) -> dict:
        return _wait(lambda: (job := self.job(job_id))["status"] in statuses and job, timeout,
                     f"job {job_id} to reach {statuses}", interval=0.1)

    def cancel(self, job_id: str) -> requests.Response:
        return requests.delete(self.stack.gateway(f"/api/jobs/{job_id}"), headers=self.headers, timeout=10)

    def balance(self) -> dict:
        return CreditsClient(self.stack.credits_url, SERVICE_TOKEN).open_account(self.id)

    def settles_at(self, expected: dict, timeout: float = 5) -> bool:
        """The balance reaches ``expected`` (a worker releases a hold just after the job turns final)."""
        deadline = time.monotonic() + timeout
        while (balance := self.balance()) != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert balance == expected
        return True

    def ledger(self) -> list[tuple[str, int, int]]:
        return [tuple(r) for r in self.stack.sql(
            "SELECT type, amount, held_change FROM credit_ledger WHERE user_id = :u ORDER BY id", u=self.id)]

    def upload(self, data: bytes, name: str = "source.png") -> requests.Response:
        return requests.post(self.stack.gateway("/api/uploads"), headers=self.headers, timeout=15,
                             files={"image": (name, data, "application/octet-stream")})

    def socket(self) -> "Events":
        ws = websocket.create_connection(self.stack.gateway(f"/ws?token={self.token}").replace("http", "ws", 1),
                                         timeout=10)
        assert json.loads(ws.recv())["type"] == "ready"
        return Events(ws)


class Events:
    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws
        self.seen: list[dict] = []

    def until(self, job_id: str, final=("job.succeeded", "job.failed", "job.cancelled"), timeout: float = 30) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                event = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                break
            self.seen.append(event)
            if event.get("data", {}).get("jobId") == job_id and event["type"] in final:
                return [e for e in self.seen if e.get("data", {}).get("jobId") == job_id]
        pytest.fail(f"no final event for {job_id}: {[e['type'] for e in self.seen]}")

    def close(self) -> None:
        self.ws.close()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def build_stack(tmp: Path, database_url: str | None = None, broker: str = "redis", **extra_env: str) -> Stack:
    redis = RedisServer(tmp / "redis")
    redis.start()
    if broker == "rabbitmq":
        extra_env = {"BROKER_URL": AMQP_URL, **extra_env}
    keys = tmp / "keys"
    env = {
        "APP_ENV": "test", "DATA_DIR": str(tmp / "data"),
        "DATABASE_URL": database_url or f"sqlite:///{tmp / 'render.db'}",
        "REDIS_URL": redis.url, "SERVICE_TOKEN": SERVICE_TOKEN, "GATEWAY_PORT": str(free_port()),
        "AUTH_PORT": str(free_port()), "CREDITS_PORT": str(free_port()), "GALLERY_PORT": str(free_port()),
        "JWT_PRIVATE_KEY_PATH": str(keys / "jwt_private.pem"), "JWT_PUBLIC_KEY_PATH": str(keys / "jwt_public.pem"),
        "RENDER_QUEUE": f"render-e2e-{uuid.uuid4().hex[:6]}", "JOB_DEADLINE_SECONDS": "60",
        "RENDER_HEARTBEAT_SECONDS": "1", "RENDER_RECONCILE_SECONDS": "1", "RENDER_LOST_MESSAGE_SECONDS": "2",
        "RENDER_COMFYUI_RETRY_SECONDS": "3", "RENDER_PRICING_CACHE_SECONDS": "1",
        "RATE_LIMIT_GLOBAL": "100000/minute", "RATE_LIMIT_GENERATE": "10000/minute", **extra_env,
    }
    settings = load_settings(env)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_dev_keys(settings)
    for service in SERVICES:
        upgrade(service, settings.database_url)
    stack = Stack(tmp, redis, settings, env)
    try:
        for service in ("credits", "gateway", "reconciler", "scheduler"):
            stack.start_service(service)
    except BaseException:  # a service that never answered: stop what did start
        teardown_stack(stack)
        raise
    return stack


def teardown_stack(stack: Stack) -> None:
    for worker in list(stack.workers.values()):
        worker.kill(signal.SIGTERM)
    for proc, _ in stack.emulators.values():
        proc.kill(signal.SIGTERM)
    for service in list(stack.services.values()):
        if service.proc.poll() is None:
            service.send(signal.SIGCONT)  # a paused process must run to hear SIGTERM
        service.kill(signal.SIGTERM)
    stack.redis.stop()


@pytest.fixture(scope="module", params=BROKERS)
def stack(request, tmp_path_factory):
    built = build_stack(tmp_path_factory.mktemp("render-e2e"), broker=request.param)
    yield built
    teardown_stack(built)
