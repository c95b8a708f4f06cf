"""Hold → capture cycles per second through the credits service, as production runs it.

    .venv/bin/python bench/credits.py [--seconds 8] [--clients 8] [--backend mariadb|sqlite|both]

For each backend: a fresh database (MariaDB: created and dropped on 127.0.0.1:3306 as root,
or BENCH_MYSQL_URL), the credits migrations, the service under gunicorn (gthread, 2 workers ×
16 threads), 1,000 accounts opened over HTTP; then 8 concurrent CreditsClient users run
hold(text2img × 1) → capture(1 image) cycles, first spread over the 1,000 accounts, then all on
one hot account. Prints cycles/s and cycle latency percentiles.
"""
from __future__ import annotations

import argparse
import itertools
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import pymysql  # noqa: E402
import requests  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from shared.config import load_settings  # noqa: E402
from shared.embedded import free_port  # noqa: E402
from shared.migrate import upgrade  # noqa: E402
from services.credits.app import create_app  # noqa: E402
from services.credits.audit import audit  # noqa: E402
from services.credits.client import CreditsClient  # noqa: E402

ACCOUNTS = 1000
MYSQL_SERVER_URL = os.environ.get("BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/")


def _mysql(url: str, statement: str) -> None:
    parsed = make_url(url)
    connection = pymysql.connect(host=parsed.host, port=parsed.port or 3306, user=parsed.username,
                                 password=parsed.password or "")
    with connection.cursor() as cursor:
        cursor.execute(statement)
    connection.close()


def create_database(backend: str, workdir: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{workdir / 'bench.db'}"
    name = f"aigc_bench_{uuid.uuid4().hex[:10]}"
    _mysql(MYSQL_SERVER_URL, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    return make_url(MYSQL_SERVER_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    if make_url(url).get_backend_name() != "sqlite":
        _mysql(MYSQL_SERVER_URL, f"DROP DATABASE IF EXISTS `{make_url(url).database}`")


def start_service(env: dict[str, str], workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log_path = workdir / "gunicorn.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", "2", "--threads", "16",
             "-b", f"127.0.0.1:{port}", "--log-level", "warning", "services.credits.app:create_app()"],
            cwd=PROJECT_ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise SystemExit(f"the credits service did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.1)


def run_cycles(client: CreditsClient, users: list[int], clients: int, seconds: float) -> tuple[int, list[float]]:
    """``clients`` threads each loop hold → capture until ``seconds`` pass; returns
    (cycles, latencies in seconds)."""
    stop_at = time.monotonic() + seconds
    next_user = itertools.cycle(users)
    lock = threading.Lock()
    latencies: list[float] = []

    def worker(_index: int) -> None:
        while time.monotonic() < stop_at:
            with lock:
                user_id = next(next_user)
            job = uuid.uuid4().hex
            started = time.perf_counter()
            client.hold(user_id, job, "text2img", 1, "bench")
            client.capture(job, f"capture:{job}:0")
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(worker, range(clients)))
    return len(latencies), latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


def bench(backend: str, seconds: float, clients: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-credits-{backend}-"))
    url = create_database(backend, workdir)
    env = {"APP_ENV": "development", "DATA_DIR": str(workdir), "DATABASE_URL": url,
           "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"),
           "SERVICE_TOKEN": secrets.token_urlsafe(24), "LOG_LEVEL": "WARNING"}
    proc = None
    try:
        upgrade("credits", url)
        settings = load_settings(env)
        local = create_app(settings)  # for the one setup grant and the audit, in-process
        credits = local.extensions["credits"]
        proc, base_url = start_service(env, workdir)
        client = CreditsClient(base_url, env["SERVICE_TOKEN"], timeout=30)
        users = list(range(1, ACCOUNTS + 1))
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            list(pool.map(client.open_account, users))
        opened = time.perf_counter() - started
        print(f"[{backend}] opened {ACCOUNTS} accounts in {opened:.1f} s ({ACCOUNTS / opened:.0f}/s)")

        for label, pool_users in (("across 1,000 accounts", users), ("one hot account", [ACCOUNTS + 1])):
            if len(pool_users) == 1:
                credits.open_account(pool_users[0])
                local.extensions["credits_adjustments"].grant(pool_users[0], 1_000_000, "bench hot account",
                                                              operator_id=0)
            cycles, latencies = run_cycles(client, pool_users, clients, seconds)
            print(f"[{backend}] {label}: {cycles / seconds:7.1f} hold→capture cycles/s "
                  f"({clients} clients, {cycles} cycles in {seconds:.0f} s; cycle p50 "
                  f"{percentile(latencies, 0.5):.1f} ms, p95 {percentile(latencies, 0.95):.1f} ms)")
        client.close()
        found = audit(credits.db)
        print(f"[{backend}] audit: {'clean' if not found else f'{len(found)} discrepancies'}")
        local.extensions["db"].dispose()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=15)
        drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each measurement")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--backend", choices=("mariadb", "sqlite", "both"), default="both")
    args = parser.parse_args()
    for backend in (("mariadb", "sqlite") if args.backend == "both" else (args.backend,)):
        bench(backend, args.seconds, args.clients)


if __name__ == "__main__":
    main()
