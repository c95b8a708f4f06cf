"""Thousands of live sockets on one gateway process, and what they cost HTTP.

    .venv/bin/python bench/sockets.py [--sockets 2000] [--streamed 200] [--rate 5] [--seconds 10]

Starts credits and one gateway process under gunicorn exactly as ``make run`` does
(``deploy.local.service_commands``; the gateway's gevent worker, one worker here so every
socket lands in one process). Then:

1. HTTP alone: ``wrk`` sends ``GET /api/users/credits`` (proxied to credits) for --seconds.
2. A separate asyncio process (``bench/_socket_clients.py``) opens --sockets authenticated
   sockets, one user each; the gateway's RSS is read before and after.
3. --streamed of those users receive a live job stream (``job.progress`` at --rate events
   per second each, published as the render workers do, through ``shared.events.EventBus``):
   for --seconds alone, then for --seconds more while ``wrk`` runs the same HTTP load again.

Prints HTTP p50/p99 without and with the sockets, progress delivery latency p50/p99
(publish → the client's receipt) without and with the HTTP load (wrk's closed loop keeps
the gateway's CPU busy, so that figure includes queueing behind HTTP requests), the
gateway's RSS per socket and the sockets that dropped. No assertion: figures only. Raises
the open-files limit to the hard limit.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _harness import PROJECT_ROOT, Processes, access_token, is_ready, local_env, percentile, run_wrk

import psutil
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from deploy.local import service_commands
from shared.config import load_settings
from shared.events import EventBus, redis_client
from shared.migrate import upgrade
from shared.tokens import ensure_dev_keys

HTTP_PATH = "/api/users/credits"
HTTP_CLIENTS = 16
FIRST_USER = 50_000_000


def raise_open_files_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def one_worker(command: list[str]) -> list[str]:
    command = list(command)
    command[command.index("--workers") + 1] = "1"
    return command


def gateway_rss(gateway: subprocess.Popen) -> int:
    """Bytes resident in the gateway's worker processes (gunicorn's arbiter holds no sockets)."""
    return sum(child.memory_info().rss for child in psutil.Process(gateway.pid).children(recursive=True))


class Streams:
    """``rate`` job.progress events per second for each user, until stopped."""

    def __init__(self, redis_url: str, users: list[int], rate: float) -> None:
        self.bus = EventBus(redis_client(redis_url))
        self.users = users
        self.rate = rate
        self.published = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        step = 0
        interval = 1.0 / self.rate
        next_round = time.monotonic()
        while not self.stop.is_set():
            step += 1
            for user_id in self.users:
                job_id = f"bench-{user_id}"
                self.bus.publish(user_id, "job.progress", {"jobId": job_id, "step": step, "totalSteps": 1000,
                                                           "percent": step % 100}, job_id=job_id)
                self.published += 1
            next_round += interval
            self.stop.wait(max(0.0, next_round - time.monotonic()))

    def __enter__(self) -> Streams:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join()
        self.bus.redis.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--streamed", type=int, default=200, help="sockets whose user receives a job stream")
    parser.add_argument("--rate", type=float, default=5.0, help="progress events per second per stream")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each HTTP measurement")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/sockets.py drives HTTP load with wrk: apt-get install wrk")
    open_files = raise_open_files_limit()

    workdir = Path(tempfile.mkdtemp(prefix="bench-sockets-"))
    token = secrets.token_urlsafe(24)
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
    env = local_env(workdir, token, redis_url)
    settings = load_settings(env)
    ensure_dev_keys(settings)
    for service in ("credits", "render"):
        upgrade(service, settings.database_url)
    key = load_pem_private_key(settings.jwt_private_key_path.read_bytes(), password=None)
    users = list(range(FIRST_USER, FIRST_USER + args.sockets))
    tokens_file = workdir / "tokens.txt"
    tokens_file.write_text("\n".join(access_token(key, user, f"s{user}", dt.timedelta(hours=2)) for user in users))
    http_token = access_token(key, FIRST_USER - 1, "bench_http", dt.timedelta(hours=2))

    commands = service_commands(settings)
    gateway_url = f"http://127.0.0.1:{settings.gateway_port}"
    http = (gateway_url, [("GET", HTTP_PATH, {"Authorization": f"Bearer {http_token}"})])
    try:
        with Processes(workdir) as processes:
            processes.start("credits", commands["credits"], env=env,
                            ready=lambda: is_ready(f"{settings.credits_url}/readyz"))
            gateway = processes.start("gateway", one_worker(commands["gateway"]), env=env,
                                      ready=lambda: is_ready(f"{gateway_url}/healthz"))
            print(f"one gateway process (gevent) and credits as `make run` starts them; {os.cpu_count()} CPU "
                  f"cores; open-files limit {open_files}; HTTP load: wrk, {HTTP_CLIENTS} keep-alive clients, "
                  f"GET {HTTP_PATH}")
            run_wrk(*http, HTTP_CLIENTS, 2)  # warm up: pools, caches, the account's first read
            idle = run_wrk(*http, HTTP_CLIENTS, args.seconds)
            rss_before = gateway_rss(gateway)

            clients = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "bench" / "_socket_clients.py"),
                                        f"ws://127.0.0.1:{settings.gateway_port}/ws", str(tokens_file)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
            started = time.monotonic()
            ready_line = clients.stdout.readline().strip()
            if not ready_line.startswith("ready"):
                raise SystemExit(f"the socket clients failed: {ready_line!r}")
            opened_in = time.monotonic() - started
            time.sleep(1)
            rss_after = gateway_rss(gateway)
            with Streams(redis_url, users[:args.streamed], args.rate) as streams:
                time.sleep(1)
                quiet = (time.time(), time.time() + args.seconds)
                time.sleep(args.seconds)
                started_load = time.time()
                loaded = run_wrk(*http, HTTP_CLIENTS, args.seconds)
                busy = (started_load, time.time())
            time.sleep(1)  # the last events in flight arrive
            clients.stdin.write("stop\n")
            clients.stdin.flush()
            report = json.loads(clients.stdout.readline())
            clients.wait(timeout=60)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    progress = report["progress"]
    print(f"\nsockets: {args.sockets} opened in {opened_in:.1f} s; dropped while open: {report['dropped']}")
    print(f"gateway RSS: {rss_before / 2**20:.1f} MiB before, {rss_after / 2**20:.1f} MiB with the sockets: "
          f"{(rss_after - rss_before) / args.sockets / 1024:.1f} KiB per socket")
    print(f"live job streams: {args.streamed} users × {args.rate:g} progress events/s; {streams.published} published, "
          f"{len(progress)} delivered")
    for label, (start, end) in (("streams alone", quiet), ("streams + HTTP load", busy)):
        latencies = [latency for arrived, latency in progress if start <= arrived < end]
        print(f"  progress delivery latency, {label:<20} p50 {percentile(latencies, 0.5):6.1f} ms, "
              f"p99 {percentile(latencies, 0.99):6.1f} ms, max {max(latencies, default=float('nan')):6.1f} ms "
              f"({len(latencies)} events)")
    print(f"HTTP GET {HTTP_PATH}:  {'':<24} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    for label, result in (("idle (no sockets)", idle), (f"{args.sockets} sockets + streams", loaded)):
        print(f"  {label:<40} {result.p50_ms:8.2f} {result.p99_ms:8.2f} {result.rps:8.0f}")
    print(f"  p99 with the sockets: {loaded.p99_ms / idle.p99_ms:.2f}× idle")


if __name__ == "__main__":
    main()
