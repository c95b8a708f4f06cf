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
import contextlib
import datetime as dt
import http.client
import os
import random
import secrets
import tempfile
import threading
import time
from pathlib import Path

from _harness import PROJECT_ROOT, Processes, access_token, fresh_database, is_ready, percentile

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from deploy.local import service_commands
from services.gallery.models import Work
from services.gallery.seed import seed_demo
from shared.config import load_settings
from shared.db import Database
from shared.embedded import free_port
from shared.migrate import upgrade_all
from shared.tokens import ensure_dev_keys

FIRST_USER_ID = 900_000_000


def _without_access_log(command: list[str]) -> list[str]:
    return [part for part in command if part not in ("--access-logfile", "-")]


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
    database = contextlib.nullcontext(args.database_url) if args.database_url else fresh_database("mariadb", workdir)
    with database as url, Processes(workdir) as processes:
        gateway_port, gallery_port = free_port(), free_port()
        env = {**os.environ, "APP_ENV": "development", "DATA_DIR": str(workdir), "DATABASE_URL": url,
               "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
               "SERVICE_TOKEN": secrets.token_urlsafe(24), "GATEWAY_PORT": str(gateway_port),
               "GALLERY_PORT": str(gallery_port), "AUTH_URL": f"http://127.0.0.1:{free_port()}",
               "LOG_LEVEL": "WARNING", "PYTHONPATH": str(PROJECT_ROOT),
               "RATE_LIMIT_GLOBAL": "100000000/minute"}  # one client address makes every request here
        settings = load_settings(env)
        ensure_dev_keys(settings)
        db = Database(url)
        if not args.database_url:
            upgrade_all(settings)
            print(f"seeding {args.works} works / {args.users} users / {args.likes} likes into "
                  f"{make_url(url).database} ...")
            summary = seed_demo(db, works=args.works, users=args.users, likes=args.likes,
                                first_user_id=FIRST_USER_ID, echo=lambda line: None)
            print(f"seeded in {summary['seconds']:.0f} s")
        with db.read() as session:
            low, high = session.execute(select(func.min(Work.id), func.max(Work.id))).one()
        db.dispose()
        commands = service_commands(settings)
        processes.start("gallery", _without_access_log(commands["gallery"]), env=env)
        processes.start("gateway", _without_access_log(commands["gateway"]), env=env,
                        ready=lambda: is_ready(f"http://127.0.0.1:{gateway_port}/api/works/gallery?pageSize=1"))
        private_key = settings.jwt_private_key_path.read_text()
        tokens = [access_token(private_key, user_id, f"demo_{user_id}", dt.timedelta(hours=2))
                  for user_id in range(FIRST_USER_ID + args.users, FIRST_USER_ID + args.users + 200)]

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
            print(f"{name:<20}{rate:>9.0f}{percentile(latencies, 0.5):>9.1f}{percentile(latencies, 0.99):>9.1f}"
                  f"{errors:>8}")

if __name__ == "__main__":
    main()
