"""The public gallery through the gateway, as `make run` starts it, on MariaDB with demo data.

    .venv/bin/python bench/gallery.py [--works 2000 --users 100 --likes 8500] [--seconds 8]
                                      [--connections 16] [--wrk | --python-client]
                                      [--scale-works 1000000] [--scale-backend mariadb|sqlite|both|none]
                                      [--only detail]

Throughput (the first part): a fresh MariaDB database (127.0.0.1:3306 as root, or
BENCH_MYSQL_URL) with every service's migrations, filled by the demo generator (the
issue's comparison size by default: 2,000 public works, 100 authors, ~8,500 likes) and
with the authors registered in auth, so author names and avatars are real lookups. Auth,
the gallery and two gateways run under gunicorn with the options `make run` uses (access
logs off): one gateway as configured (its edge cache on) and one with
``EDGE_CACHE_SECONDS=0``, so every scenario prints a cached and an uncached figure.
Load comes from wrk (``-t2 -c16``, a Lua script varying the requests; installed with
apt-get when missing and possible), or from Python threads with ``--python-client``.
Scenarios vary sorts and pages (first pages and cursor pages, 20 per page):

  anonymous page   newest / hottest / trending, pages 1–3
  signed-in page   the same, each request with one of 200 readers' access tokens
  anonymous detail a random work
  anonymous search Chinese and English words

Before each is measured, every distinct request in it is made once (the cache then starts as
a minute of traffic leaves it: 2,000 works at a few hundred requests/s take that long to
visit), then 1 s of load warms pools. For each it prints requests/s, p50, p99, failed
requests, the CPU milliseconds each process spent per request (gateway, gallery, auth;
Redis and MariaDB are shared with anything else running on the machine, so theirs are
indicative only) and, cached, the share of requests answered from the cache.

At scale (the second part): a database of ``--scale-works`` works (1,000,000), kept
between runs (``bench_gallery_scale_<works>`` on MariaDB, ``var/bench/`` for SQLite) and
seeded only once, behind an uncached gateway; one client, one request at a time: pages
(newest / hottest, first and deep cursor pages) and searches (Chinese and English, one
and two words, sorted newest and hottest), p50 and p99 each, and the query plans of the
search.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import random
import secrets
import re
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator
from urllib.parse import quote, urlencode

import redis
import requests
from _harness import (PROJECT_ROOT, CpuMeter, Load, Processes, Request, access_token, ensure_wrk,
                      fresh_database, is_ready, kept_database, percentile, run_python_clients, run_wrk,
                      sequential_latencies)
from sqlalchemy import func, insert, select

from deploy.local import service_commands
from services.auth.models import User
from services.gallery.models import Work, WorkTerm
from services.gallery.seed import seed_demo
from shared.config import Settings, load_settings
from shared.db import Database, utcnow
from shared.embedded import free_port
from shared.migrate import upgrade_all
from shared.tokens import ensure_dev_keys

FIRST_USER_ID = 900_000_000
PAGE_SIZE = 20
SORTS = ("newest", "hottest", "trending")
SEARCH_WORDS = ("castle", "lighthouse", "oil painting", "robot rain", "赛博朋克", "水墨仙鹤", "星空", "山水 油画")
_EDGE_ANSWERS = re.compile(r'^gateway_edge_cache_total\{result="(\w+)"\} (\S+)$', re.MULTILINE)
SCALE_SEARCHES = ("castle", "fox", "oil painting", "dragon dusk", "pixel", "赛博朋克", "星空", "水墨", "古镇 雨中",
                  "樱花 油画")


def _without_access_log(command: list[str]) -> list[str]:
    return [part for part in command if part not in ("--access-logfile", "-")]


def register_authors(db: Database, users: int) -> None:
    """Auth's users for the demo authors (ids from FIRST_USER_ID), so author lookups find them."""
    now = utcnow()
    rows = [{"id": FIRST_USER_ID + index, "username": f"demo_{index:05d}", "username_lower": f"demo_{index:05d}",
             "email": f"demo_{index:05d}@bench.invalid", "password_hash": "-", "role": "user", "is_active": True,
             "bio": "", "website": "", "location": "", "avatar_key": None, "new_works_public": True,
             "profile_visible": True, "created_at": now, "updated_at": now} for index in range(users)]
    with db.transaction() as session:
        existing = session.scalar(select(func.count()).select_from(User).where(User.id >= FIRST_USER_ID))
        if not existing:
            for start in range(0, len(rows), 5000):
                session.execute(insert(User), rows[start:start + 5000])


def seed(db: Database, settings: Settings, works: int, users: int, likes: int) -> None:
    upgrade_all(settings)
    with db.read() as session:
        present = session.scalar(select(func.count()).select_from(Work))
    if present >= works:
        print(f"reusing {present} seeded works")
    else:
        print(f"seeding {works} works / {users} authors / {likes} likes ...", flush=True)
        summary = seed_demo(db, works=works, users=users, likes=likes, first_user_id=FIRST_USER_ID,
                            echo=lambda line: print(line, flush=True) if works >= 100_000 else None)
        print(f"seeded in {summary['seconds']:.0f} s", flush=True)
    register_authors(db, users)


class Stack:
    """Auth, the gallery and two gateways (edge cache on, and off) over one database."""

    def __init__(self, processes: Processes, workdir: Path, database_url: str) -> None:
        self.ports = {name: free_port() for name in ("gateway", "uncached", "auth", "gallery", "credits")}
        self.env = {**os.environ, "APP_ENV": "development", "DATA_DIR": str(workdir), "DATABASE_URL": database_url,
                    "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
                    "SERVICE_TOKEN": secrets.token_urlsafe(24), "GATEWAY_PORT": str(self.ports["gateway"]),
                    "AUTH_PORT": str(self.ports["auth"]), "GALLERY_PORT": str(self.ports["gallery"]),
                    "CREDITS_PORT": str(self.ports["credits"]), "LOG_LEVEL": "WARNING",
                    "PYTHONPATH": str(PROJECT_ROOT),
                    # One client address makes every request here.
                    "RATE_LIMIT_GLOBAL": "1000000000/minute",
                    "RATE_LIMIT_NAMESPACE": f"bench-{secrets.token_hex(4)}",
                    "EDGE_CACHE_NAMESPACE": f"bench-{secrets.token_hex(4)}"}
        self.settings = load_settings(self.env)
        ensure_dev_keys(self.settings)
        self.processes = processes

    def start(self, with_auth: bool = True) -> dict[str, int]:
        """Start the processes; returns their pids by name. The gallery's sets of liked works
        left in this Redis by an earlier run described another database: they go first."""
        store = redis.Redis.from_url(self.settings.redis_url)
        try:
            for key in store.scan_iter("gallery:liked:*", count=1000):
                store.delete(key)
        finally:
            store.close()
        commands = service_commands(self.settings)
        uncached_env = {**self.env, "GATEWAY_PORT": str(self.ports["uncached"]), "EDGE_CACHE_SECONDS": "0"}
        uncached = service_commands(load_settings(uncached_env))["gateway"]
        ready = {name: (lambda port=port: is_ready(f"http://127.0.0.1:{port}/readyz"))
                 for name, port in (("auth", self.ports["auth"]), ("gallery", self.ports["gallery"]))}
        pids = {}
        if with_auth:
            pids["auth"] = self.processes.start("auth", _without_access_log(commands["auth"]), env=self.env,
                                                ready=ready["auth"]).pid
        pids["gallery"] = self.processes.start("gallery", _without_access_log(commands["gallery"]), env=self.env,
                                               ready=ready["gallery"]).pid
        for name, command, env in (("gateway", commands["gateway"], self.env), ("uncached", uncached, uncached_env)):
            port = int(env["GATEWAY_PORT"])
            pids[name] = self.processes.start(
                name, _without_access_log(command), env=env,
                ready=lambda port=port: is_ready(f"http://127.0.0.1:{port}/api/works/gallery?pageSize=1")).pid
        return pids

    def url(self, gateway: str) -> str:
        return f"http://127.0.0.1:{self.ports[gateway]}"


def gallery_query(**params) -> str:
    return "/api/works/gallery?" + urlencode(params, quote_via=quote)


def page_paths(base_url: str, sorts: tuple[str, ...], pages: int, search: str = "") -> list[str]:
    """First pages and the cursor pages after them, as a visitor scrolling would ask for them."""
    paths = []
    for sort in sorts:
        params = {"sort": sort, "pageSize": PAGE_SIZE, **({"search": search} if search else {})}
        for _ in range(pages):
            path = gallery_query(**params)
            paths.append(path)
            cursor = requests.get(base_url + path, timeout=60).json()["data"]["nextCursor"]
            if cursor is None:
                break
            params["cursor"] = cursor
    return paths


class Throughput:
    def __init__(self, stack: Stack, pids: dict[str, int], use_wrk: bool, connections: int, seconds: float) -> None:
        self.stack = stack
        self.use_wrk = use_wrk
        self.connections = connections
        self.seconds = seconds
        self.meter = CpuMeter({name: pid for name, pid in pids.items()})

    def load(self, gateway: str, requests_: list[Request], seconds: float) -> Load:
        if self.use_wrk:
            return run_wrk(self.stack.url(gateway), requests_, self.connections, seconds)
        return run_python_clients("127.0.0.1", self.stack.ports[gateway], requests_, self.connections, seconds)

    def sweep(self, gateway: str, requests_: list[Request]) -> None:
        """Every distinct request once (8 threads): the cache starts as a minute of traffic
        leaves it, not cold (2,000 works at a few hundred requests/s take that long to visit)."""
        base, local = self.stack.url(gateway), threading.local()

        def get(request: tuple[str, str, tuple[tuple[str, str], ...]]) -> None:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            local.session.get(base + request[1], headers=dict(request[2]), timeout=60)

        distinct = dict.fromkeys((method, path, tuple(sorted(headers.items()))) for method, path, headers in requests_)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(get, distinct))

    def edge_answers(self, gateway: str) -> dict[str, float]:
        text = requests.get(self.stack.url(gateway) + "/metrics", timeout=10).text
        return {state: float(value) for state, value in _EDGE_ANSWERS.findall(text)}

    def measure(self, name: str, requests_: list[Request]) -> None:
        for gateway in ("gateway", "uncached"):
            self.sweep(gateway, requests_)
            self.load(gateway, requests_, 1.0)  # warm pools, caches and imports
            answers = self.edge_answers(gateway)
            self.meter.start()
            result = self.load(gateway, requests_, self.seconds)
            cpu = self.meter.stop()
            answered = {state: count - answers.get(state, 0.0) for state, count in self.edge_answers(gateway).items()}
            label = "cached" if gateway == "gateway" else "uncached"
            per_request = {process: seconds * 1000 / max(result.requests, 1) for process, seconds in cpu.items()
                           if process in ("auth", "gallery", "redis", "mariadb") or process == gateway}
            cpu_text = "  ".join(f"{'gateway' if p in ('gateway', 'uncached') else p} {ms:.2f}"
                                 for p, ms in per_request.items())
            hits = f"  hits {100 * answered.get('hit', 0) / max(sum(answered.values()), 1):.0f} %" \
                if gateway == "gateway" else ""
            print(f"{name:<18}{label:<9}{result.rps:>8.0f}{result.p50_ms:>8.1f}{result.p99_ms:>8.1f}"
                  f"{result.errors:>7}   {cpu_text}{hits}", flush=True)


def throughput(args: argparse.Namespace, use_wrk: bool) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="gallery-bench-"))
    database = contextlib.nullcontext(args.database_url) if args.database_url else fresh_database("mariadb", workdir)
    with database as url, Processes(workdir) as processes:
        stack = Stack(processes, workdir, url)
        db = Database(url)
        seed(db, stack.settings, args.works, args.users, args.likes)
        with db.read() as session:
            ids = list(session.scalars(select(Work.id).where(Work.listed.is_(True))))
        db.dispose()
        pids = stack.start()
        private_key = stack.settings.jwt_private_key_path.read_text()
        # Readers, not authors: 200 signed-in users who own none of the works (an author seeing
        # a page with their own work is answered by the gallery itself, as before).
        tokens = [access_token(private_key, FIRST_USER_ID + args.users + index, f"reader_{index:05d}",
                               dt.timedelta(hours=2)) for index in range(200)]
        rng = random.Random(7)
        pages = page_paths(stack.url("uncached"), SORTS, 3)
        details = [f"/api/works/{work_id}" for work_id in rng.sample(ids, min(len(ids), 2000))]
        searches = [gallery_query(search=word, pageSize=PAGE_SIZE) for word in SEARCH_WORDS]
        scenarios: dict[str, list[Request]] = {
            "anonymous page": [("GET", path, {}) for path in pages],
            "signed-in page": [("GET", path, {"Authorization": f"Bearer {token}"})
                               for path in pages for token in rng.sample(tokens, min(len(tokens), 25))],
            "anonymous detail": [("GET", path, {}) for path in details],
            "anonymous search": [("GET", path, {}) for path in searches],
        }
        if args.only:
            scenarios = {name: requests_ for name, requests_ in scenarios.items() if args.only in name}
        bench = Throughput(stack, pids, use_wrk, args.connections, args.seconds)
        print(f"\n{args.connections} connections, {args.seconds:g} s each, load from "
              f"{'wrk -t2' if use_wrk else 'Python threads'}; {len(ids)} public works on MariaDB; "
              f"{os.cpu_count()} cores")
        print(f"{'scenario':<18}{'gateway':<9}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}   "
              f"CPU ms per request by process")
        for name, requests_ in scenarios.items():
            bench.measure(name, requests_)
    shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def scale_database(backend: str, works: int) -> Iterator[str]:
    if backend == "sqlite":
        folder = PROJECT_ROOT / "var" / "bench"
        folder.mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{folder / f'gallery-scale-{works}.db'}"
        return
    yield kept_database(f"bench_gallery_scale_{works}")


def at_scale(args: argparse.Namespace, backend: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="gallery-scale-"))
    with scale_database(backend, args.scale_works) as url, Processes(workdir) as processes:
        stack = Stack(processes, workdir, url)
        db = Database(url)
        seed(db, stack.settings, args.scale_works, 10_000, args.scale_works)
        db.dispose()
        stack.start()
        base = stack.url("uncached")
        rng = random.Random(11)
        print(f"\nAt scale ({backend}, {args.scale_works} works), one client, uncached gateway, "
              f"{args.requests} requests per row")
        print(f"{'what':<34}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}")
        for sort in ("newest", "hottest"):
            paths = page_paths(base, (sort,), 6)
            deep = [gallery_query(sort=sort, pageSize=PAGE_SIZE, cursor=cursor)
                    for cursor in deep_cursors(base, sort, rng)]
            report(stack, f"gallery {sort}, pages 1-6 + deep", paths + deep, args.requests)
        for sort in ("newest", "hottest"):
            for language, words in (("English", [w for w in SCALE_SEARCHES if w.isascii()]),
                                    ("Chinese", [w for w in SCALE_SEARCHES if not w.isascii()])):
                paths = [gallery_query(search=word, sort=sort, pageSize=PAGE_SIZE) for word in words]
                paths += [path for word in words[:2] for path in page_paths(base, (sort,), 3, word)[1:]]
                report(stack, f"search {language}, {sort}", paths, args.requests)
        for words in ("castle", "赛博朋克"):
            print(f"\nplan of a search for {words!r}, newest first ({backend}):")
            print("\n".join(explain(url, words, "newest")))
    shutil.rmtree(workdir, ignore_errors=True)


def explain(url: str, words: str, sort: str) -> list[str]:
    """The database's plans for the first page of the first ranking group of a gallery search:
    the capped count per term that chooses the plan, then either (every term common) the
    walk in sort order with a lookup per term and work, or the rarest term's works and the
    other terms looked up for all of them at once; last, the read of the works found."""
    from services.gallery.listing import GALLERY_SORTS, LISTED, LISTED_BY_ID
    from services.gallery.search import DRIVING_LIMIT, TITLE_OR_TAG, WALK_ROWS, Search, TermCounts

    column = GALLERY_SORTS[sort]
    order = (column.desc(), Work.id.desc())
    db = Database(url)
    search = Search.parse(words)
    probe = search.probes()[0]
    try:
        with db.read() as session:
            candidates = search.candidates(session, 1, TermCounts())
            boundary = session.execute(select(column, Work.id).where(LISTED).order_by(*order)
                                       .offset(WALK_ROWS - 1).limit(1)).first()
        statements = {"count (plan choice)": select(func.count()).select_from(
            probe.works(TITLE_OR_TAG).limit(DRIVING_LIMIT).subquery())}
        if candidates is None:
            statements[f"the {WALK_ROWS}th work in sort order (the walk's bound)"] = (
                select(column, Work.id).where(LISTED).order_by(*order).offset(WALK_ROWS - 1).limit(1))
            statements["the walk: works in sort order, a lookup per term each"] = (
                select(Work.id, column).where(LISTED, column >= boundary[0], *search.group_conditions(1))
                .order_by(*order).limit(PAGE_SIZE + 1))
        else:
            statements[f"candidates: the rarest term's {len(candidates)} works"] = probe.works(TITLE_OR_TAG)
            statements["each other term among them"] = (
                select(WorkTerm.work_id, func.max(WorkTerm.weight))
                .where(search.probes()[-1]._term(), WorkTerm.work_id.in_(candidates or [0])).group_by(WorkTerm.work_id))
            statements["the listed ones among the matches, to sort"] = select(Work.id, column).where(
                Work.id.in_(candidates or [0]), LISTED_BY_ID)
        statements[f"the works found (the first {PAGE_SIZE + 1}), with the text check"] = select(Work).where(
            Work.id.in_(list(range(1, PAGE_SIZE + 2))), *search.text_conditions())
        prefix = "EXPLAIN QUERY PLAN " if db.dialect == "sqlite" else "EXPLAIN "
        lines = []
        with db.engine.connect() as connection:
            for what, stmt in statements.items():
                sql = str(stmt.compile(db.engine, compile_kwargs={"literal_binds": True}))
                lines.append(f"  -- {what}")
                rows = connection.exec_driver_sql(prefix + sql)
                lines += ["  " + " | ".join(str(value) for value in row) for row in rows]
        return lines
    finally:
        db.dispose()


def deep_cursors(base_url: str, sort: str, rng: random.Random) -> list[str]:
    """Cursors deep into the listing, found by following a few pages of 100."""
    cursors, params = [], {"sort": sort, "pageSize": 100}
    for _ in range(10):
        data = requests.get(base_url + gallery_query(**params), timeout=60).json()["data"]
        if data["nextCursor"] is None:
            break
        cursors.append(data["nextCursor"])
        params["cursor"] = data["nextCursor"]
    return rng.sample(cursors, min(len(cursors), 5))


def report(stack: Stack, what: str, paths: list[str], count: int) -> None:
    sequential_latencies("127.0.0.1", stack.ports["uncached"], [("GET", p, {}) for p in paths], len(paths))
    latencies, errors = sequential_latencies("127.0.0.1", stack.ports["uncached"],
                                             [("GET", p, {}) for p in paths], count)
    print(f"{what:<34}{percentile(latencies, 0.5):>8.1f}{percentile(latencies, 0.99):>8.1f}{errors:>7}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--works", type=int, default=2_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--likes", type=int, default=8_500)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--database-url", help="reuse this seeded database for the throughput part (kept)")
    loaders = parser.add_mutually_exclusive_group()
    loaders.add_argument("--wrk", action="store_true", help="load from wrk (installed if missing); the default "
                                                            "when wrk is installed")
    loaders.add_argument("--python-client", action="store_true", help="load from Python threads")
    parser.add_argument("--scale-works", type=int, default=1_000_000)
    parser.add_argument("--scale-backend", choices=("mariadb", "sqlite", "both", "none"), default="mariadb")
    parser.add_argument("--requests", type=int, default=300, help="requests per row at scale")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--only", help="throughput scenarios whose name contains this (e.g. detail)")
    args = parser.parse_args()

    use_wrk = False
    if not args.python_client:
        use_wrk = ensure_wrk() is not None
        if args.wrk and not use_wrk:
            raise SystemExit("wrk is not installed and could not be installed (apt-get install wrk)")
    if not args.skip_throughput:
        throughput(args, use_wrk)
    if args.scale_backend != "none":
        for backend in (("mariadb", "sqlite") if args.scale_backend == "both" else (args.scale_backend,)):
            at_scale(args, backend)


if __name__ == "__main__":
    main()
