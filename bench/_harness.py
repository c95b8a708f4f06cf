"""What the benches share: the project on ``sys.path``, processes started and stopped as a
group, a private stack (Redis, keys, migrations), a throwaway database, access tokens and
percentiles.

A bench imports this module first (``bench/`` is on ``sys.path`` when a bench runs as a
script), so the project's packages import after it. MariaDB databases are made and dropped
by the same helpers the tests use (``tests/conftest.py``).
"""
from __future__ import annotations

import datetime as dt
import http.client
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import jwt  # noqa: E402
import psutil  # noqa: E402
import pymysql  # noqa: E402
import requests  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from deploy.processes import GATEWAY_WORKER  # noqa: E402
from shared.config import Settings, load_settings  # noqa: E402
from shared.embedded import free_port, redis_answers, redis_server_binary, redis_server_command  # noqa: E402
from shared.http_transport import SERVER_KEEPALIVE_SECONDS  # noqa: E402
from shared.migrate import SERVICES, upgrade  # noqa: E402
from shared.tokens import ensure_dev_keys  # noqa: E402
from tests.conftest import DEFAULT_MYSQL_URL, create_mysql_database, drop_mysql_database  # noqa: E402

MYSQL_SERVER_URL = os.environ.get("BENCH_MYSQL_URL", DEFAULT_MYSQL_URL)
STOP_SECONDS = 20


def gunicorn_command(app_module: str, bind: str, workers: int, threads: int,
                     worker_class: str = "gthread") -> list[str]:
    """A service under gunicorn without access logs, for benches that size it themselves:
    ``threads`` requests at once per process, on threads (gthread) or greenlets (gevent: gunicorn's
    own; gevent-server: gevent's HTTP server, ``deploy.processes.GATEWAY_WORKER``)."""
    per_process = ("--threads", str(threads)) if worker_class == "gthread" else ("--worker-connections", str(threads))
    worker_class = GATEWAY_WORKER if worker_class == "gevent-server" else worker_class
    return [sys.executable, "-m", "gunicorn", "--worker-class", worker_class, *per_process, "--workers", str(workers),
            "--bind", bind, "--keep-alive", str(SERVER_KEEPALIVE_SECONDS), "--log-level", "warning",
            f"{app_module}:create_app()"]


def gateway_command(bind: str, workers: int, connections: int = 2000) -> list[str]:
    """The gateway as production runs it (gevent's own HTTP server in gunicorn's workers, a
    greenlet per request and per socket: ``deploy.processes.GATEWAY_WORKER``), without access logs."""
    return [sys.executable, "-m", "gunicorn", "--worker-class", GATEWAY_WORKER, "--workers", str(workers),
            "--worker-connections", str(connections), "--bind", bind,
            "--keep-alive", str(SERVER_KEEPALIVE_SECONDS), "--log-level", "warning", "services.gateway.app:create_app()"]


def is_ready(url: str) -> bool:
    """Whether ``GET url`` answers 200."""
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


class Processes:
    """The processes one bench starts, each in its own session with its output in
    ``<log_dir>/<name>.log``; stopped together, last started first. ``pids`` names them."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []
        self.pids: dict[str, int] = {}

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, name: str, command: list[str], *, env: dict[str, str] | None = None,
              ready: Callable[[], bool] | None = None, timeout: float = 60) -> subprocess.Popen:
        """Start ``command`` and, given ``ready``, wait until it holds; a process that exits or
        is not ready in time ends the bench with the tail of its log."""
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append(proc)
        self.pids[name] = proc.pid
        deadline = time.monotonic() + timeout
        while ready is not None and not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{name} did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()
        self.pids.clear()


@dataclass
class PrivateStack:
    """What a bench's own platform runs on: its settings, the environment its processes get
    (``os.environ`` with the stack's settings over it) and the key access tokens are signed with."""

    settings: Settings
    process_env: dict[str, str]
    private_key: str

    def start_gunicorn(self, processes: Processes, name: str, module: str, url: str, workers: int,
                       threads: int) -> None:
        """A service of this stack under gunicorn (gthread) at ``url``, waited for until its /healthz answers."""
        processes.start(name, gunicorn_command(module, url.split("//", 1)[1], workers, threads),
                        env=self.process_env, ready=lambda: is_ready(url + "/healthz"), timeout=30)


def private_stack(processes: Processes, workdir: Path, database_url: str, service_token: str,
                  **settings: str) -> PrivateStack:
    """Start a private redis-server on a free port and prepare a platform on it and on
    ``database_url`` (development keys under ``workdir/keys``, every service's migrations):
    test mode, warning logs, free ports for credits and the gateway, rate limits out of the
    way; ``settings`` (name=value) are added or override those."""
    redis_port = free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    processes.start("redis", redis_server_command(redis_server_binary(), redis_port, workdir / "redis"),
                    ready=lambda: redis_answers(redis_url), timeout=10)
    keys = workdir / "keys"
    env = {
        "APP_ENV": "test", "DATA_DIR": str(workdir / "data"), "DATABASE_URL": database_url,
        "REDIS_URL": redis_url, "SERVICE_TOKEN": service_token, "LOG_LEVEL": "WARNING",
        "JWT_PRIVATE_KEY_PATH": str(keys / "private.pem"), "JWT_PUBLIC_KEY_PATH": str(keys / "public.pem"),
        "CREDITS_PORT": str(free_port()), "GATEWAY_PORT": str(free_port()),
        "RATE_LIMIT_GLOBAL": "1000000/minute", "RATE_LIMIT_GENERATE": "100000/minute", **settings,
    }
    loaded = load_settings(env)
    loaded.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_dev_keys(loaded)
    for service in SERVICES:
        upgrade(service, database_url)
    return PrivateStack(loaded, {**os.environ, **env}, loaded.jwt_private_key_path.read_text())


def local_env(workdir: Path, service_token: str, redis_url: str | None = None) -> dict[str, str]:
    """``os.environ`` with a development platform in ``workdir`` on SQLite and the machine's Redis
    (``redis_url``, else BENCH_REDIS_URL, else database 15), for ``deploy.local.service_commands``:
    the gateway, auth, credits and gallery on free local ports, the global rate limit out of the
    way and counted in a namespace of this run."""
    return {**os.environ, "APP_ENV": "development", "DATA_DIR": str(workdir),
            "DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
            "REDIS_URL": redis_url or os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"),
            "SERVICE_TOKEN": service_token, "LOG_LEVEL": "WARNING", "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(free_port()), "CREDITS_PORT": str(free_port()),
            "AUTH_PORT": str(free_port()), "GALLERY_PORT": str(free_port()),
            "RATE_LIMIT_GLOBAL": "1000000000/minute", "RATE_LIMIT_NAMESPACE": f"bench-{service_token[:8]}"}


@contextmanager
def fresh_database(backend: str, workdir: Path) -> Iterator[str]:
    """The URL of an empty database: ``workdir/bench.db`` for "sqlite", else a uniquely named
    MariaDB database on BENCH_MYSQL_URL (root@127.0.0.1:3306 by default), dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    url = create_mysql_database(MYSQL_SERVER_URL)
    try:
        yield url
    finally:
        drop_mysql_database(url)


def kept_database(name: str) -> str:
    """The URL of the MariaDB database ``name`` on BENCH_MYSQL_URL, kept between runs (created
    empty the first time), for data that takes long to generate."""
    parsed = make_url(MYSQL_SERVER_URL)
    connection = pymysql.connect(host=parsed.host, port=parsed.port or 3306, user=parsed.username,
                                 password=parsed.password or "")
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    connection.close()
    return parsed.set(database=name).render_as_string(hide_password=False)


def access_token(private_key: Any, user_id: int, username: str, lifetime: dt.timedelta) -> str:
    """An access token signed the way auth signs one, for a user the bench made up. The key is
    the PEM text, or (to sign thousands: parsing PEM costs tens of ms) the loaded key."""
    now = dt.datetime.now(dt.timezone.utc)
    return jwt.encode({"sub": str(user_id), "username": username, "role": "user", "type": "access",
                       "jti": uuid.uuid4().hex, "iat": now, "exp": now + lifetime}, private_key, algorithm="RS256")


def percentile(values: list[float], fraction: float) -> float:
    """The value at rank ``fraction × n`` of the sorted values (the last one at most); NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class Load:
    """What one load run measured: requests, requests per second, latency percentiles (ms),
    and the requests that failed (non-2xx/3xx answers and socket errors)."""

    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


Request = tuple[str, str, dict[str, str]]  # method, path, headers

_WRK_LATENCY = re.compile(r"^\s*(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_TOTAL = re.compile(r"(\d+) requests in")
_WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def ensure_wrk() -> str | None:
    """The ``wrk`` binary, installed with apt-get when missing and this process may; None otherwise."""
    found = shutil.which("wrk")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        print("wrk is missing; installing it with apt-get ...")
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False, capture_output=True)
        found = shutil.which("wrk")
    return found


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrk_script(requests_: list[Request]) -> str:
    """A wrk Lua script sending the given requests in random order (each thread seeded apart)."""
    rows = []
    for method, path, headers in requests_:
        header_table = ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items())
        rows.append(f"  {{{_lua_string(method)}, {_lua_string(path)}, {{{header_table}}}}},")
    return "\n".join([
        "local specs = {", *rows, "}",
        "local counter = 0",
        "function setup(thread) counter = counter + 1; thread:set('seed', counter) end",
        "local prepared = {}",
        "function init(args)",
        "  math.randomseed(os.time() * 1000 + (seed or 0))",
        "  for i, spec in ipairs(specs) do prepared[i] = wrk.format(spec[1], spec[2], spec[3]) end",
        "end",
        "function request() return prepared[math.random(#prepared)] end",
    ])


def run_wrk(base_url: str, requests_: list[Request], connections: int, seconds: float,
            threads: int = 2) -> Load:
    """Load ``base_url`` with wrk (``-t threads -c connections``), picking among ``requests_``.
    A request slower than wrk's default 2 s would be counted as a socket error without its
    latency; with a 10-s timeout it stays in the latency figures (p99, max) where it belongs."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(wrk_script(requests_))
    try:
        command = ["wrk", "-t", str(min(threads, connections)), "-c", str(connections), "-d", f"{seconds:g}s",
                   "--latency", "--timeout", "10s", "-s", script.name, base_url]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script.name)
    latency = {percent: float(value) * _UNIT_MS[unit] for percent, value, unit in _WRK_LATENCY.findall(output)}
    total = int(_WRK_TOTAL.search(output).group(1))
    non_2xx = _WRK_NON_2XX.search(output)
    sockets = _WRK_SOCKET.search(output)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, sockets.groups())) if sockets else 0)
    return Load(total, float(_WRK_RPS.search(output).group(1)), latency["50"], latency["99"], errors)


def run_python_clients(host: str, port: int, requests_: list[Request], connections: int,
                       seconds: float) -> Load:
    """The same load from Python threads, each on its own keep-alive connection (when wrk is
    missing; the client then competes with the servers for the CPU)."""
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    stop_at = time.monotonic() + seconds
    barrier = threading.Barrier(connections)

    def client(index: int) -> None:
        rng = random.Random(index)
        connection = http.client.HTTPConnection(host, port, timeout=30)
        barrier.wait()
        while time.monotonic() < stop_at:
            method, path, headers = rng.choice(requests_)
            started = time.perf_counter()
            connection.request(method, path, headers=headers)
            response = connection.getresponse()
            response.read()
            latencies[index].append((time.perf_counter() - started) * 1000)
            if response.status >= 400:
                errors[index] += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    flat = [value for values in latencies for value in values]
    return Load(len(flat), len(flat) / elapsed, percentile(flat, 0.5), percentile(flat, 0.99), sum(errors))


def sequential_latencies(host: str, port: int, requests_: list[Request], count: int) -> tuple[list[float], int]:
    """One client sending ``count`` requests (cycling through ``requests_``) one after another
    on one keep-alive connection; returns (latencies in ms, failed requests)."""
    connection = http.client.HTTPConnection(host, port, timeout=60)
    latencies, errors = [], 0
    for index in range(count):
        method, path, headers = requests_[index % len(requests_)]
        started = time.perf_counter()
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        response.read()
        latencies.append((time.perf_counter() - started) * 1000)
        errors += response.status >= 400
    connection.close()
    return latencies, errors


class CpuMeter:
    """CPU seconds (user + system) used by named process trees (a gunicorn master and its
    workers) between ``start()`` and ``stop()``. Also reads shared servers (Redis, MariaDB)
    when their processes are visible; those serve other clients of the machine too.

    ``precise``: each thread's time on a CPU in nanoseconds (``/proc/<pid>/task/*/schedstat``,
    Linux) instead of user + system time, which the kernel counts in 10-ms ticks: a process that
    wakes a few times a second shows 0 or 10 ms over a few seconds. A thread that ends within the
    window drops out of it, so it suits windows without jobs (the stack's idle CPU)."""

    SHARED = {"redis": ("redis-server",), "mariadb": ("mariadbd", "mysqld")}

    def __init__(self, processes: dict[str, int], precise: bool = False) -> None:
        self.roots = processes
        self.precise = precise
        self.shared = {label: [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] in names]
                       for label, names in self.SHARED.items()}
        self._started: dict[str, float] = {}

    def _tree_seconds(self, pids: list[int], recursive: bool) -> float:
        total = 0.0
        for pid in pids:
            try:
                root = psutil.Process(pid)
                for proc in [root, *(root.children(recursive=True) if recursive else [])]:
                    total += self._process_seconds(proc)
            except psutil.Error:
                continue
        return total

    def _process_seconds(self, proc: psutil.Process) -> float:
        if not self.precise:
            times = proc.cpu_times()
            return times.user + times.system
        total = 0
        for task in Path(f"/proc/{proc.pid}/task").glob("*/schedstat"):
            try:
                total += int(task.read_text().split()[0])
            except (OSError, IndexError, ValueError):
                continue  # the thread ended meanwhile
        return total / 1e9

    def _read(self) -> dict[str, float]:
        readings = {name: self._tree_seconds([pid], True) for name, pid in self.roots.items()}
        readings.update({name: self._tree_seconds(pids, False) for name, pids in self.shared.items() if pids})
        return readings

    def start(self) -> None:
        self._started = self._read()

    def stop(self) -> dict[str, float]:
        """CPU seconds per process tree since ``start()``."""
        return {name: seconds - self._started.get(name, 0.0) for name, seconds in self._read().items()}
