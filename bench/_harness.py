"""What the benches share: the project on ``sys.path``, processes started and stopped as a
group, a throwaway database, access tokens and percentiles.

A bench imports this module first (``bench/`` is on ``sys.path`` when a bench runs as a
script), so the project's packages import after it. MariaDB databases are made and dropped
by the same helpers the tests use (``tests/conftest.py``).
"""
from __future__ import annotations

import datetime as dt
import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import jwt  # noqa: E402
import requests  # noqa: E402

from shared.internal_http import SERVER_KEEPALIVE_SECONDS  # noqa: E402
from tests.conftest import DEFAULT_MYSQL_URL, create_mysql_database, drop_mysql_database  # noqa: E402

MYSQL_SERVER_URL = os.environ.get("BENCH_MYSQL_URL", DEFAULT_MYSQL_URL)
STOP_SECONDS = 20


def gunicorn_command(app_module: str, bind: str, workers: int, threads: int) -> list[str]:
    """A service under gunicorn (gthread) without access logs, for benches that size it themselves."""
    return [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", str(workers),
            "--threads", str(threads), "--bind", bind, "--keep-alive", str(SERVER_KEEPALIVE_SECONDS),
            "--log-level", "warning", f"{app_module}:create_app()"]


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
    ``<log_dir>/<name>.log``; stopped together, last started first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

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
class Result:
    p50_ms: float
    p99_ms: float
    rps: float
    requests: int


_WRK_LATENCY = re.compile(r"^\s*(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_TOTAL = re.compile(r"(\d+) requests in")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(url: str, headers: dict[str, str], clients: int, seconds: float) -> Result:
    """GET ``url`` from ``clients`` keep-alive connections for ``seconds`` with wrk (C, so the
    load generator takes little CPU from the servers); any non-2xx answer ends the bench."""
    command = ["wrk", "-t", str(min(2, clients)), "-c", str(clients), "-d", f"{seconds:g}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run(command + [url], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output:
        raise SystemExit(f"wrk saw errors:\n{output}")
    latency = {percent: float(value) * _UNIT_MS[unit] for percent, value, unit in _WRK_LATENCY.findall(output)}
    return Result(latency["50"], latency["99"], float(_WRK_RPS.search(output).group(1)),
                  int(_WRK_TOTAL.search(output).group(1)))
