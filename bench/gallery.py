"""Gallery requests/s and latency through the gateway, on MariaDB with demo data.

    .venv/bin/python bench/gallery.py [--works 100000 --users 10000 --likes 1000000]
                                      [--clients 16] [--seconds 8] [--database-url URL]

Creates a fresh MariaDB database (127.0.0.1:3306 as root, or BENCH_MYSQL_URL), applies every
service's migrations, fills the gallery with the demo generator (``gallery seed-demo``),
starts the gallery and the gateway under gunicorn as ``deploy/local.py`` runs them (access
logs off), then runs each scenario with ``--clients`` concurrent keep-alive clients:
newest page, hottest page, a search, a detail, a like. Prints requests/s, p50 and p99.
With ``--database-url`` an already seeded database is reused and kept.
Auth is not started: author avatars fall back to the stored username (fast, cached failure).
"""
from __future__ import annotations

import argparse
import datetime as dt
import http.client
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import jwt  # noqa: E402
import pymysql  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from deploy.local import service_commands  # noqa: E402
from services.gallery.models import Work  # noqa: E402
from services.gallery.seed import seed_demo  # noqa: E402
from shared.config import load_settings  # noqa: E402
from shared.db import Database  # noqa: E402
from shared.embedded import free_port  # noqa: E402
from shared.migrate import upgrade_all  # noqa: E402
from shared.tokens import ensure_dev_keys  # noqa: E402

MYSQL_SERVER_URL = os.environ.get("BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/")
FIRST_USER_ID = 900_000_000


def _mysql(statement: str) -> None:
    parsed = make_url(MYSQL_SERVER_URL)
    connection = pymysql.connect(host=parsed.host, port=parsed.port or 3306, user=parsed.username,
                                 password=parsed.password or "")
    with connection.cursor() as cursor:
        cursor.execute(statement)
    connection.close()


def _token(private_key: str, user_id: int) -> str:
    now = dt.datetime.now(dt.timezone.utc)
    return jwt.encode({"sub": str(user_id), "username": f"demo_{user_id}", "role": "user", "type": "access",
                       "jti": uuid.uuid4().hex, "iat": now, "exp": now + dt.timedelta(hours=2)},
                      private_key, algorithm="RS256")


def _start(commands: dict[str, list[str]], env: dict[str, str], log_dir: Path) -> list[subprocess.Popen]:
    procs = []
    for name in ("gallery", "gateway"):
        command = [part for part in commands[name] if part not in ("--access-logfile", "-")]
        log = open(log_dir / f"{name}.log", "wb")
        procs.append(subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))
    return procs


def _wait_ready(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/api/works/gallery?pageSize=1")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit("gateway/gallery did not become ready; see the logs")


def _run(port: int, clients: int, seconds: float, make_request) -> tuple[float, list[float], int]:
    """Each client loops on its own keep-alive connection; returns (req/s, latencies ms, errors)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    statuses: dict[int, bytes] = {}
    stop_at = time.monotonic() + seconds
    barrier = threading.Barrier(clients)

    def client(index: int) -> None:
        rng = random.Random(index)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        barrier.wait()
        while time.monotonic() < stop_at:
            method, path, headers = make_request(rng)
            started = time.perf_counter()
            connection.request(method, path, headers=headers)
            response = connection.getresponse()
            body = response.read()
            latencies[index].append((time.perf_counter() - started) * 1000)
            if response.status != 200:
                errors[index] += 1
                statuses.setdefault(response.status, body[:200])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    flat = sorted(value for values in latencies for value in values)
    for status, body in statuses.items():
        print(f"    (status {status}: {body!r})")
    return len(flat) / elapsed, flat, sum(errors)


def _pct(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(len(values) * fraction))] if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--works", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--likes", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--database-url", help="reuse this seeded database (not dropped)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="gallery-bench-"))
    created = None
    if args.database_url:
        url = args.database_url
    else:
        created = f"aigc_bench_{uuid.uuid4().hex[:10]}"
        _mysql(f"CREATE DATABASE `{created}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        url = make_url(MYSQL_SERVER_URL).set(database=created).render_as_string(hide_password=False)
    gateway_port, gallery_port = free_port(), free_port()
    env = {**os.environ, "APP_ENV": "development", "DATA_DIR": str(workdir), "DATABASE_URL": url,
           "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
           "SERVICE_TOKEN": secrets.token_urlsafe(24), "GATEWAY_PORT": str(gateway_port),
           "GALLERY_PORT": str(gallery_port), "AUTH_URL": f"http://127.0.0.1:{free_port()}",
           "LOG_LEVEL": "WARNING", "PYTHONPATH": str(PROJECT_ROOT),
           "RATE_LIMIT_GLOBAL": "100000000/minute"}  # one client address makes every request here
    settings = load_settings(env)
    ensure_dev_keys(settings)
    procs: list[subprocess.Popen] = []
    try:
        db = Database(url)
        if created:
            upgrade_all(settings)
            print(f"seeding {args.works} works / {args.users} users / {args.likes} likes into {created} ...")
            summary = seed_demo(db, works=args.works, users=args.users, likes=args.likes,
                                first_user_id=FIRST_USER_ID, echo=lambda line: None)
            print(f"seeded in {summary['seconds']:.0f} s")
        with db.read() as session:
            low, high = session.execute(select(func.min(Work.id), func.max(Work.id))).one()
        db.dispose()
        procs = _start(service_commands(settings), env, workdir)
        _wait_ready(gateway_port)
        private_key = settings.jwt_private_key_path.read_text()
        tokens = [_token(private_key, FIRST_USER_ID + args.users + i) for i in range(200)]

        def page(sort: str):
            return lambda rng: ("GET", f"/api/works/gallery?sort={sort}&pageSize=24", {})

        scenarios = {
            "newest page": page("newest"),
            "hottest page": page("hottest"),
            "search 'castle'": lambda rng: ("GET", "/api/works/gallery?search=castle&pageSize=24", {}),
            "search '赛博朋克'": lambda rng: ("GET", "/api/works/gallery?search=%E8%B5%9B%E5%8D%9A%E6%9C%8B%E5%85%8B"
                                                   "&pageSize=24", {}),
            "detail": lambda rng: ("GET", f"/api/works/{rng.randint(low, high)}", {}),
            "like": lambda rng: ("PUT", f"/api/works/{rng.randint(low, high)}/like",
                                 {"Authorization": f"Bearer {rng.choice(tokens)}"}),
        }
        print(f"\n{args.clients} clients, {args.seconds:.0f} s each, through the gateway (MariaDB, "
              f"{high - low + 1} works)")
        print(f"{'scenario':<20}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
        for name, make_request in scenarios.items():
            _run(gateway_port, args.clients, 1.0, make_request)  # warm caches and pools
            rate, latencies, errors = _run(gateway_port, args.clients, args.seconds, make_request)
            print(f"{name:<20}{rate:>9.0f}{_pct(latencies, 0.5):>9.1f}{_pct(latencies, 0.99):>9.1f}{errors:>8}")
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=20)
        if created:
            _mysql(f"DROP DATABASE IF EXISTS `{created}`")


if __name__ == "__main__":
    main()
