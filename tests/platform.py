"""The whole platform as ``make run`` starts it, for end-to-end tests.

``start_platform`` launches ``python -m deploy.local run`` (gateway, auth, credits,
gallery, safety, integrations, a render worker, the ComfyUI emulator, the background
processes) on free ports (every one: a default port may belong to another running platform)
against the test database and Redis, waits until this platform's own worker has published
its catalog (not a stale one left in the shared Redis by an earlier run), and on exit
stops it with Ctrl-C (SIGINT), checking that every process it started is gone.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Callable, Iterator, TypeVar
from urllib.parse import urlparse

import pytest

from services.render.catalog import read_live_catalogs
from shared.config import PROJECT_ROOT
from shared.events import redis_client

T = TypeVar("T")


class Platform:
    def __init__(self, base_url: str, log_path: Path, env: dict[str, str]) -> None:
        self.base_url = base_url
        self.log_path = log_path
        self.env = env

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, predicate: Callable[[], T], timeout: float, what: str) -> T:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.2)
        pytest.fail(f"timed out waiting for {what}\n{self.log()[-4000:]}")

    def worker_ready(self) -> bool:
        queue = f"{self.env['RENDER_QUEUE']}.text2img"
        client = redis_client(self.env["REDIS_URL"])
        try:
            return any(queue in catalog.get("queues", []) for catalog in read_live_catalogs(client))
        finally:
            client.close()


def _distinct_free_ports(count: int, taken: int | None = None) -> list[int]:
    """``count`` free ports, none equal to another or to ``taken``: picked while all are bound
    (ports picked one at a time and released may come back twice)."""
    sockets: list[socket.socket] = []
    try:
        while len(sockets) < count:
            sock = socket.socket()
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
            if sock.getsockname()[1] == taken:
                sockets.pop().close()
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextmanager
def start_platform(tmp_path_factory: pytest.TempPathFactory, settings_env: dict[str, str], database_url: str,
                   **extra_env: str) -> Iterator[Platform]:
    """The platforms a test session starts share one data folder and, per backend, one
    database of their own: a public work saved by one run has its files where the next run
    (which lists it in the gallery) looks for them."""
    given = int(extra_env.pop("GATEWAY_PORT", 0)) or None  # given when PUBLIC_URL must name it
    gateway_port, auth_port, credits_port, gallery_port, safety_port, integrations_port, comfyui_port = \
        _distinct_free_ports(7, taken=given)
    gateway_port = given or gateway_port
    env = {**os.environ, **settings_env, "DATABASE_URL": database_url, "REDIS_URL": _own_redis(settings_env["REDIS_URL"]),
           "DATA_DIR": str(tmp_path_factory.getbasetemp() / "platform-data")}
    env.update(
        GATEWAY_PORT=str(gateway_port), AUTH_PORT=str(auth_port), CREDITS_PORT=str(credits_port),
        GALLERY_PORT=str(gallery_port), SAFETY_PORT=str(safety_port), INTEGRATIONS_PORT=str(integrations_port),
        COMFYUI_URL=f"http://127.0.0.1:{comfyui_port}",
        RENDER_QUEUE=f"render-e2e-{uuid.uuid4().hex[:8]}",
        # Several sign-ups per run (and one run per database) from one address.
        RATE_LIMIT_REGISTER="1000/hour", RATE_LIMIT_LOGIN="1000/minute", RATE_LIMIT_GENERATE="1000/minute",
        RATE_LIMIT_GLOBAL="100000/minute", RATE_LIMIT_NAMESPACE=f"ratelimit-e2e-{uuid.uuid4().hex[:8]}",
        **extra_env,
    )
    log_path = tmp_path_factory.mktemp("platform") / "platform.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "deploy.local", "run"], env=env, cwd=PROJECT_ROOT,
                                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    platform = Platform(f"http://127.0.0.1:{gateway_port}", log_path, env)
    try:
        platform.wait_for(lambda: f"Open http://127.0.0.1:{gateway_port}" in platform.log() or proc.poll() is not None,
                          120, "the platform to announce its URL")
        assert proc.poll() is None, platform.log()[-4000:]
        platform.wait_for(platform.worker_ready, 120, "this platform's render worker to publish its catalog")
        yield platform
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _kill_all(proc, platform)
            pytest.fail(f"the platform did not stop within 30 s of Ctrl-C\n{platform.log()[-4000:]}")
    _assert_all_stopped(platform)


def _own_redis(url: str) -> str:
    """The next Redis database of the tests' server, emptied: the other tests leave entries (such
    as ``user.deleted`` on the platform stream) that this platform's consumers would act on."""
    parsed = urlparse(url)
    database = (int(parsed.path.lstrip("/") or 0) + 1) % 16
    own = parsed._replace(path=f"/{database}").geturl()
    client = redis_client(own)
    client.flushdb()
    client.close()
    return own


def _children(platform: Platform) -> list[int]:
    """Every process the platform's supervisor started, each the leader of its own group."""
    return [int(pid) for pid in re.findall(r"started \(pid=(\d+)\)", platform.log())]


def _kill_all(proc: subprocess.Popen, platform: Platform) -> None:
    """SIGKILL to the supervisor's group and to each child's: a platform that would not stop
    must not go on consuming jobs, Redis databases and CPU under the tests that follow."""
    _kill_groups([proc.pid, *_children(platform)])
    proc.wait(timeout=30)


def _kill_groups(pids: list[int]) -> None:
    for pid in pids:
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def _assert_all_stopped(platform: Platform) -> None:
    pids = _children(platform)
    assert len(pids) >= 6, platform.log()[-2000:]
    deadline = time.monotonic() + 10  # a process group's last members may take a moment to be reaped
    while (survivors := [pid for pid in pids if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    _kill_groups(survivors)  # the failure is this test's, not the next ones'
    assert not survivors, f"processes left running after Ctrl-C: {survivors}"


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True
