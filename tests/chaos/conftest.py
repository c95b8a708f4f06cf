"""The platform's render side under faults: the real processes, started as ``make run`` starts
them (the render e2e ``Stack``: a private redis-server, credits, gallery, the reconciler, two
ComfyUI emulators with a worker each, the gateway), on SQLite and, when one answers, MariaDB.

The faults of the workers and what their messages go through (a worker killed mid-batch, every
worker dead then the fleet back, a ComfyUI dying, Redis killed without its append-only file)
run once per Celery broker (``EVERY_BROKER``: ids ``[…-redis]`` and ``[…-rabbitmq]``, the latter
when a RabbitMQ answers, required with ``TEST_REQUIRE_RABBITMQ=1``); on RabbitMQ a killed
worker's unacknowledged messages return to its queue as soon as its connection closes, and
messages sent before Redis lost its data outlive it. The other faults (credits, the gallery,
Redis with its append-only file) do not depend on the broker and run on Redis only
(``REDIS_BROKER``). One fault is RabbitMQ's alone: a live worker cut off from it (``Relay``, a
TCP relay the test cuts; RabbitMQ itself is never touched). The stack's queue names and worker
names are unique per run, so a shared RabbitMQ needs no vhost of its own.

Each test injects one fault while its users' jobs run, and ``Chaos.assert_healed`` then
checks what must hold after any fault: no job left queued or running once a worker is
back, every finished job's outbox emptied, every hold captured or released and matching
the images delivered, ``credits audit`` clean (so balance + held equals the ledger for
every user), and every user saw a final event for each of their jobs.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

import pytest
import websocket

from shared.config import PROJECT_ROOT
from tests.conftest import BROKERS, MYSQL_SERVER_URL, create_mysql_database, drop_mysql_database
from tests.render_e2e.conftest import Stack, User, _wait, build_stack, teardown_stack

FINAL_EVENTS = ("job.succeeded", "job.failed", "job.cancelled")
# Short jobs and short timings: a fault, its recovery and the checks fit in seconds.
CHAOS_ENV = {
    "JOB_DEADLINE_SECONDS": "60", "RENDER_COMFYUI_RETRY_SECONDS": "3", "RENDER_CREDITS_RETRY_SECONDS": "2",
    "RENDER_NO_WORKER_GRACE_SECONDS": "6", "RENDER_USER_ACTIVE_LIMIT": "6",
}
EMULATORS = {"w1": "a", "w2": "b"}
# A module-scoped stack per broker: every chaos test names its broker(s), so one stack serves
# all the tests on a broker (a test without the parameter would need a stack of its own).
EVERY_BROKER = pytest.mark.parametrize("broker", BROKERS, indirect=True, scope="module")
REDIS_BROKER = pytest.mark.parametrize("broker", ["redis"], indirect=True, scope="module")


class Watcher(threading.Thread):
    """A user's browser tab: one live socket, opened again whenever it drops, asking on each
    (re)connect for the events of the user's jobs after the last one it saw (``resume``)."""

    def __init__(self, user: User) -> None:
        super().__init__(name=f"watcher-{user.id}", daemon=True)
        self.user = user
        self.jobs: list[str] = []
        self.last_id: dict[str, str] = {}
        self.final: dict[str, dict] = {}
        self.stopped = threading.Event()

    def watch(self, job_id: str) -> None:
        self.jobs.append(job_id)

    def run(self) -> None:
        url = self.user.stack.gateway(f"/ws?token={self.user.token}").replace("http", "ws", 1)
        while not self.stopped.is_set():
            try:
                ws = websocket.create_connection(url, timeout=5)
                try:
                    self._follow(ws)
                finally:
                    ws.shutdown()  # closes the socket even when the connection is already lost
            except (websocket.WebSocketException, OSError, ValueError):
                self.stopped.wait(0.5)

    def _follow(self, ws: websocket.WebSocket) -> None:
        if json.loads(ws.recv()).get("type") != "ready":
            return
        for job_id in list(self.jobs):
            ws.send(json.dumps({"type": "resume", "jobId": job_id, "after": self.last_id.get(job_id, "0")}))
        ws.settimeout(0.5)
        while not self.stopped.is_set():
            try:
                event = json.loads(ws.recv())
            except websocket.WebSocketTimeoutException:
                continue
            job_id = (event.get("data") or {}).get("jobId")
            if job_id and event.get("id"):
                self.last_id[job_id] = event["id"]
            if job_id and event.get("type") in FINAL_EVENTS:
                self.final[job_id] = event

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


class Relay:
    """A TCP relay between one process and its broker that a test can cut: every connection
    through it dropped, and new ones refused for a while (the network between them fails)."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.target = (parsed.hostname, parsed.port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = parsed._replace(netloc=f"{parsed.netloc.rpartition('@')[0]}@127.0.0.1:"
                                          f"{self.server.getsockname()[1]}").geturl()
        self.up = threading.Event()
        self.up.set()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, name="relay", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:  # closed
                return
            if not self.up.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
            with self.lock:
                self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (sink, source):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        source.close()  # the sink is the other direction's source

    def cut(self, seconds: float) -> None:
        """Drop every connection and refuse new ones for ``seconds``."""
        self.up.clear()
        with self.lock:
            for end in self.sockets:
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.sockets.clear()
        time.sleep(seconds)
        self.up.set()

    def close(self) -> None:
        self.server.close()
        self.cut(0)


@dataclass
class Chaos:
    stack: Stack
    watchers: list[Watcher] = field(default_factory=list)
    jobs: list[tuple[User, str]] = field(default_factory=list)

    def users(self, count: int) -> list[User]:
        users = [self.stack.user() for _ in range(count)]
        for user in users:
            watcher = Watcher(user)
            watcher.start()
            self.watchers.append(watcher)
        return users

    def submit(self, users: list[User], per_user: int, **body) -> list[tuple[User, str]]:
        """``per_user`` jobs for each user, interleaved, each watched by its user's socket."""
        submitted = []
        for _ in range(per_user):
            for user in users:
                job_id = user.submit(**body)
                self.watcher(user).watch(job_id)
                submitted.append((user, job_id))
        self.jobs += submitted
        return submitted

    def watcher(self, user: User) -> Watcher:
        return next(w for w in self.watchers if w.user is user)

    def running_on(self, jobs: list[tuple[User, str]], worker: str | None = None) -> dict:
        """Wait until one of ``jobs`` has made progress (on ``worker`` when given); that job."""
        def busy():
            for user, job_id in jobs:
                job = user.job(job_id)
                if job["status"] == "running" and job["progress"] > 0 and \
                        (worker is None or self.stack.name_of(job["worker"]) == worker):
                    return job
            return None
        return _wait(busy, 30, "a job to make progress", interval=0.1)

    def restart_worker(self, name: str) -> None:
        self.stack.start_worker(name, EMULATORS[name])

    def states(self) -> dict[str, dict]:
        ids = [job_id for _, job_id in self.jobs]
        rows = self.stack.sql(
            "SELECT id, status, error_code, images_requested, images_delivered, price_per_image, "
            "settled_at IS NOT NULL, announced_at IS NOT NULL FROM render_jobs")
        keys = ("status", "error", "requested", "delivered", "price", "settled", "announced")
        return {row[0]: dict(zip(keys, row[1:])) for row in rows if row[0] in ids}

    def assert_healed(self, timeout: float = 90) -> dict[str, dict]:
        """Every invariant a fault must leave intact; returns the jobs' final states."""
        def done():
            states = self.states()
            return len(states) == len(self.jobs) and all(
                s["status"] not in ("queued", "running") and s["settled"] and s["announced"]
                for s in states.values()) and states
        states = _wait(done, timeout, "every job to finish and empty its outbox", interval=0.5)

        holds = {row[0]: row[1:] for row in self.stack.sql(
            "SELECT job_id, status, amount, captured, released FROM credit_holds")}
        captures = dict(self.stack.sql(
            "SELECT reference, COUNT(*) FROM credit_ledger WHERE type = 'capture' GROUP BY reference"))
        outputs = dict(self.stack.sql("SELECT job_id, COUNT(*) FROM render_outputs GROUP BY job_id"))
        for job_id, state in states.items():
            status, amount, captured, released = holds[job_id]
            delivered = outputs.get(job_id, 0)
            assert status != "open", f"job {job_id} ({state}) left its hold open"
            assert delivered == state["delivered"] and captures.get(job_id, 0) == (1 if delivered else 0), \
                f"job {job_id}: {delivered} images delivered, {captures.get(job_id, 0)} capture rows (one settlement)"
            assert (captured, released) == (delivered * state["price"], amount - delivered * state["price"]), \
                f"job {job_id}: hold {amount} captured {captured} released {released} for {delivered} images"
            if state["status"] == "succeeded":
                assert delivered == state["requested"]

        audit = subprocess.run([sys.executable, "-m", "flask", "--app", "services.credits.app:create_app",
                                "credits", "audit"], cwd=PROJECT_ROOT, env={**os.environ, **self.stack.env},
                               capture_output=True, text=True, timeout=60)
        assert audit.returncode == 0 and "credits audit: clean" in audit.stdout, audit.stdout + audit.stderr

        def heard() -> bool:
            return all(job_id in self.watcher(user).final for user, job_id in self.jobs)
        _wait(heard, 30, "every user to see a final event for each job", interval=0.2)
        for user, job_id in self.jobs:
            event = self.watcher(user).final[job_id]
            assert event["type"] == f"job.{states[job_id]['status']}", (event, states[job_id])
        return states

    def close(self) -> None:
        for watcher in self.watchers:
            watcher.stop()


@pytest.fixture(scope="module")
def broker(request) -> str:
    """The Celery broker of the stack (``EVERY_BROKER``, ``REDIS_BROKER``)."""
    return request.param


@pytest.fixture(scope="module")
def chaos_stack(db_backend, broker, tmp_path_factory):
    """The whole render side, per database backend and broker, shared by a module's faults."""
    database_url = create_mysql_database(MYSQL_SERVER_URL) if db_backend == "mariadb" else None
    stack = build_stack(tmp_path_factory.mktemp(f"chaos-{db_backend}-{broker}"), database_url, broker,
                        **CHAOS_ENV)
    try:
        stack.start_service("gallery")
        for worker, emulator in EMULATORS.items():
            stack.start_emulator(emulator)
            stack.configure(emulator, step_delay=0.05)
            stack.start_worker(worker, emulator)
        yield stack
    finally:
        teardown_stack(stack)
        if database_url:
            drop_mysql_database(database_url)


@pytest.fixture
def chaos(chaos_stack: Stack):
    """One fault's users and jobs. Each test brings back what it broke; a test that failed
    half-way may leave a worker down, which the next one starts again."""
    run = Chaos(chaos_stack)
    yield run
    run.close()
    for worker, emulator in EMULATORS.items():
        chaos_stack.configure(emulator, faults={"execution_error": None, "persistent": False})
        if worker not in chaos_stack.workers:
            chaos_stack.start_worker(worker, emulator)
