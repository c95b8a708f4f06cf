"""Job cycles per second through the credits service, as production runs it, and the
credits server's CPU per cycle.

    .venv/bin/python bench/credits.py [--seconds 8] [--clients 8] [--backend mariadb|sqlite|both]
                                      [--worker-class gthread|gevent] [--paced 0.5]

For each backend: a fresh database (MariaDB: created and dropped on 127.0.0.1:3306 as root,
or BENCH_MYSQL_URL), the credits migrations, the service under gunicorn (gthread, the worker
deploy/processes.py gives credits, 2 workers × 16 threads; or ``--worker-class gevent``, 16
connections per worker), 1,000 accounts opened over HTTP; then 8 concurrent CreditsClient
users run what a real job does now: hold(text2img × 2) at admission → settle(1 image
delivered) at the end (the render worker's one call: capture the delivered image, release the
unused one, one transaction), first spread over the 1,000 accounts, then all on one hot account, then one
client alone. The same three movements as three calls, hold → capture(1 image) → release
(what a job cost before the settle call, and what other callers may still do), follow; with
``--paced``, one more row: one client making a hold→settle every few tenths of a second, as a
render stack calls credits (its CPU per cycle includes what the server spends idle between).
Prints cycles/s, cycle latency percentiles, and the CPU milliseconds the credits processes
spent per cycle (robust to a busy machine, unlike the rates). Last, both cycles once more in
this process through the WSGI app (Flask's test client: no gunicorn, no HTTP; the CPU of
building the test requests is included): CPU per cycle (the least of 30 batches, and the
median) and the SQL statements of each call.
"""
from __future__ import annotations

import argparse
import itertools
import os
import secrets
import statistics
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable
from unittest.mock import patch

from _harness import CpuMeter, Processes, fresh_database, gunicorn_command, is_ready, percentile

from flask import Flask
from sqlalchemy import event

from shared.config import load_settings
from shared.embedded import free_port
from shared.migrate import upgrade
from shared.web import SERVICE_TOKEN_HEADER
from services.credits.app import create_app
from services.credits.audit import audit
from services.credits.client import CreditsClient
from services.credits.ledger import Transaction

ACCOUNTS = 1000


def settled_job(client: CreditsClient, user_id: int) -> None:
    """What a render job does: hold two images at admission, settle one delivered at the end."""
    job = uuid.uuid4().hex
    client.hold(user_id, job, "text2img", 2, "bench")
    client.settle(job, f"settle:{job}", 1)


def three_calls(client: CreditsClient, user_id: int) -> None:
    """The same movements one call each: hold, capture the delivered image, release the rest."""
    job = uuid.uuid4().hex
    client.hold(user_id, job, "text2img", 2, "bench")
    client.capture(job, f"capture:{job}:0")
    client.release(job, f"release:{job}")


CYCLES = {"hold→settle": settled_job, "hold→capture→release": three_calls}


def run_cycles(client: CreditsClient, cycle: Callable[[CreditsClient, int], None], users: list[int], clients: int,
               seconds: float, pause: float = 0.0) -> tuple[int, list[float]]:
    """``clients`` threads each loop ``cycle`` (``pause`` seconds apart) until ``seconds`` pass;
    returns (cycles, latencies in seconds)."""
    stop_at = time.monotonic() + seconds
    next_user = itertools.cycle(users)
    lock = threading.Lock()
    latencies: list[float] = []

    def worker(_index: int) -> None:
        while time.monotonic() < stop_at:
            with lock:
                user_id = next(next_user)
            started = time.perf_counter()
            cycle(client, user_id)
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
            if pause:
                time.sleep(pause)

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(worker, range(clients)))
    return len(latencies), latencies


class InProcessClient:
    """The movement calls of ``CreditsClient``, made through the app's test client in this process."""

    def __init__(self, app: Flask, service_token: str) -> None:
        self.client = app.test_client()
        self.headers = {SERVICE_TOKEN_HEADER: service_token}

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post(path, json=body, headers=self.headers)
        assert response.status_code in (200, 201), response.json
        return response.json["data"]

    def hold(self, user_id: int, job_id: str, workflow: str, images: int, description: str = "") -> dict:
        return self._post("/internal/holds", {"userId": user_id, "jobId": job_id, "workflow": workflow,
                                              "images": images, "description": description})

    def capture(self, job_id: str, idempotency_key: str, images: int = 1) -> dict:
        return self._post(f"/internal/holds/{job_id}/capture", {"images": images, "idempotencyKey": idempotency_key})

    def release(self, job_id: str, idempotency_key: str) -> dict:
        return self._post(f"/internal/holds/{job_id}/release", {"idempotencyKey": idempotency_key})

    def settle(self, job_id: str, idempotency_key: str, images: int) -> dict:
        return self._post(f"/internal/holds/{job_id}/settle", {"images": images, "idempotencyKey": idempotency_key})


def in_process(backend: str, app: Flask, service_token: str, users: list[int], batches: int = 30,
               batch: int = 10) -> None:
    """CPU per cycle through the WSGI app in this process, and the statements each call runs.
    Each cycle runs in ``batches`` batches of ``batch``, the kinds taking turns; the least CPU
    per cycle of a batch and the median are printed: on a machine busy with other work (or a
    virtual one whose host steals time) the average moves with the load, the least much less."""
    client = InProcessClient(app, service_token)
    statements: list[str] = []

    engine = app.extensions["db"].engine

    def count_statement(_conn, _cursor, statement, _parameters, _context, _executemany):
        statements.append(statement.split(None, 1)[0])

    def count_commit(_conn):
        statements.append("COMMIT")

    run_prepared = Transaction._run

    def count_prepared(tx, prepared, parameters, many):  # the movements' statements skip SQLAlchemy's events
        statements.append(prepared.sql.split(None, 1)[0])
        return run_prepared(tx, prepared, parameters, many)

    event.listen(engine, "before_cursor_execute", count_statement)
    event.listen(engine, "commit", count_commit)
    shown = {}
    with patch.object(Transaction, "_run", count_prepared):
        for name, cycle in CYCLES.items():
            for user_id in users[:30]:  # warm the pool and the statement cache
                cycle(client, user_id)
            statements.clear()
            cycle(client, users[0])
            shown[name] = " ".join(statements)
    event.remove(engine, "before_cursor_execute", count_statement)
    event.remove(engine, "commit", count_commit)

    next_user = itertools.cycle(users)
    per_cycle: dict[str, list[float]] = {name: [] for name in CYCLES}
    for _ in range(batches):
        for name, cycle in CYCLES.items():
            started = time.thread_time()
            for _ in range(batch):
                cycle(client, next(next_user))
            per_cycle[name].append((time.thread_time() - started) * 1000 / batch)
    for name, figures in per_cycle.items():
        print(f"[{backend}] in-process {name}: {min(figures):.2f} ms CPU per cycle at least, "
              f"{statistics.median(figures):.2f} median ({batches} batches of {batch}); its statements: {shown[name]}",
              flush=True)


def bench(backend: str, seconds: float, clients: int, worker_class: str, paced: float) -> None:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-credits-{backend}-"))
    with fresh_database(backend, workdir) as url, Processes(workdir) as processes:
        env = {"APP_ENV": "development", "DATA_DIR": str(workdir), "DATABASE_URL": url,
               "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"),
               "SERVICE_TOKEN": secrets.token_urlsafe(24), "LOG_LEVEL": "WARNING"}
        upgrade("credits", url)
        settings = load_settings(env)
        local = create_app(settings)  # for the one setup grant and the audit, in-process
        credits = local.extensions["credits"]
        base_url = f"http://127.0.0.1:{free_port()}"
        command = gunicorn_command("services.credits.app", base_url.split("//", 1)[1], 2, 16, worker_class)
        server = processes.start("gunicorn", command, env={**os.environ, **env},
                                 ready=lambda: is_ready(f"{base_url}/readyz"), timeout=30)
        meter = CpuMeter({"credits": server.pid})
        client = CreditsClient(base_url, env["SERVICE_TOKEN"], timeout=30)
        users = list(range(1, ACCOUNTS + 1))
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            list(pool.map(client.open_account, users))
        opened = time.perf_counter() - started
        print(f"[{backend}] opened {ACCOUNTS} accounts in {opened:.1f} s ({ACCOUNTS / opened:.0f}/s)")

        credits.open_account(ACCOUNTS + 1)
        local.extensions["credits_adjustments"].grant(ACCOUNTS + 1, 1_000_000, "bench hot account", operator_id=0)
        rows = [("hold→settle", "across 1,000 accounts", users, clients, seconds, 0.0),
                ("hold→settle", "one hot account", [ACCOUNTS + 1], clients, seconds, 0.0),
                ("hold→settle", "one client alone", users, 1, seconds, 0.0),
                ("hold→capture→release", "across 1,000 accounts", users, clients, seconds, 0.0),
                ("hold→capture→release", "one client alone", users, 1, seconds, 0.0)]
        if paced:
            rows.append(("hold→settle", f"one client, a job every {paced:g} s", users, 1, max(seconds, 30.0), paced))
        for name, label, pool_users, concurrency, window, pause in rows:
            meter.start()
            cycles, latencies = run_cycles(client, CYCLES[name], pool_users, concurrency, window, pause)
            cpu_ms = meter.stop()["credits"] * 1000 / max(cycles, 1)
            print(f"[{backend}] {label}: {cycles / window:7.1f} {name} cycles/s "
                  f"({concurrency} clients, {cycles} cycles in {window:.0f} s; cycle p50 "
                  f"{percentile(latencies, 0.5) * 1000:.1f} ms, p95 {percentile(latencies, 0.95) * 1000:.1f} ms; "
                  f"credits CPU {cpu_ms:.2f} ms per cycle)", flush=True)
        client.close()
        in_process(backend, local, env["SERVICE_TOKEN"], users)
        found = audit(credits.db)
        print(f"[{backend}] audit: {'clean' if not found else f'{len(found)} discrepancies'}")
        local.extensions["db"].dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each measurement")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--backend", choices=("mariadb", "sqlite", "both"), default="both")
    parser.add_argument("--worker-class", choices=("gthread", "gevent", "gevent-server"), default="gthread",
                        help="gunicorn's worker")
    parser.add_argument("--paced", type=float, default=0.0, metavar="SECONDS",
                        help="also one client making a hold→settle every SECONDS for 30 s (bench/render.py's (e) "
                             "calls credits about once a second), whose CPU per cycle includes the server's idle")
    args = parser.parse_args()
    for backend in (("mariadb", "sqlite") if args.backend == "both" else (args.backend,)):
        bench(backend, args.seconds, args.clients, args.worker_class, args.paced)


if __name__ == "__main__":
    main()
