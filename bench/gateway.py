"""The latency the gateway adds to a proxied request, measured against the service itself.

    .venv/bin/python bench/gateway.py [--seconds 5] [--clients 16] [--rounds 2]

Starts the credits service and the gateway under gunicorn with exactly the options
``make run`` uses (``deploy.local.service_commands``), then sends the same request,
``GET /api/credits/pricing``, straight to the service (with the service token the gateway
would add) and through the gateway, alternating in rounds so both see the same machine.
Load comes from ``wrk`` when installed (``apt-get install wrk``; C, so the load generator
takes little CPU from the servers), else from Python threads with keep-alive sessions.
A single sequential client is measured too: with 16 clients on 2 cores, latency is mostly
queueing for CPU (the gateway spends about 1 ms of CPU on each request), so the unloaded
figure is the closest to the hop's own cost.
Rate limits are raised for the run (RATE_LIMIT_GLOBAL) and counted in a private namespace.
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from _harness import Load, Processes, is_ready, local_env, run_python_clients, run_wrk

from deploy.local import service_commands
from shared.config import load_settings
from shared.migrate import upgrade
from shared.tokens import ensure_dev_keys

PATH = "/api/credits/pricing"


def run_load(base_url: str, headers: dict[str, str], clients: int, seconds: float, use_wrk: bool) -> Load:
    """GET ``PATH`` on ``base_url`` from ``clients`` keep-alive connections; any failed request ends the bench."""
    requests_ = [("GET", PATH, headers)]
    if use_wrk:
        load = run_wrk(base_url, requests_, clients, seconds)
    else:
        address = urlsplit(base_url)
        load = run_python_clients(address.hostname, address.port, requests_, clients, seconds)
    if load.errors:
        raise SystemExit(f"{base_url}{PATH}: {load.errors} of {load.requests} requests failed")
    return load


def combine(results: list[Load]) -> Load:
    """Rounds combined: the median of each figure."""
    return Load(requests=sum(r.requests for r in results), rps=statistics.median(r.rps for r in results),
                p50_ms=statistics.median(r.p50_ms for r in results),
                p99_ms=statistics.median(r.p99_ms for r in results), errors=0)


def measure(label: str, use_wrk: bool, targets: dict[str, tuple[str, dict[str, str]]], clients: int,
            seconds: float, rounds: int) -> None:
    for url, headers in targets.values():  # warm up pools, imports and caches
        run_load(url, headers, clients, min(seconds, 2), use_wrk)
    collected: dict[str, list[Load]] = {name: [] for name in targets}
    for _ in range(rounds):
        for name, (url, headers) in targets.items():
            collected[name].append(run_load(url, headers, clients, seconds, use_wrk))
    combined = {name: combine(results) for name, results in collected.items()}
    print(f"\n{label}: {clients} keep-alive client(s), {rounds} × {seconds:g} s per target, GET {PATH}")
    print(f"  {'target':<10} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>9} {'requests':>9}")
    for name, result in combined.items():
        print(f"  {name:<10} {result.p50_ms:8.2f} {result.p99_ms:8.2f} {result.rps:9.0f} {result.requests:9d}")
    direct, gateway = combined["direct"], combined["gateway"]
    print(f"  added by the gateway: p50 {gateway.p50_ms - direct.p50_ms:+.2f} ms, "
          f"p99 {gateway.p99_ms - direct.p99_ms:+.2f} ms, throughput {gateway.rps / direct.rps:.0%} of direct")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measurement")
    parser.add_argument("--clients", type=int, default=16, help="concurrent keep-alive clients")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per target")
    parser.add_argument("--python-client", action="store_true", help="use Python threads even if wrk is installed")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    token = secrets.token_urlsafe(24)
    env = local_env(workdir, token)
    settings = load_settings(env)
    ensure_dev_keys(settings)
    upgrade("credits", settings.credits_database_url)
    commands = service_commands(settings)
    service_url, gateway_url = settings.credits_url, f"http://127.0.0.1:{settings.gateway_port}"
    try:
        with Processes(workdir) as processes:
            processes.start("credits", commands["credits"], env=env, ready=lambda: is_ready(f"{service_url}/readyz"))
            processes.start("gateway", commands["gateway"], env=env, ready=lambda: is_ready(f"{gateway_url}/healthz"))
            targets = {"direct": (service_url, {"X-Service-Token": token}), "gateway": (gateway_url, {})}
            use_wrk = shutil.which("wrk") is not None and not args.python_client
            print(f"gateway and credits under gunicorn as `make run` starts them; load from "
                  f"{'wrk' if use_wrk else 'Python threads (http.client)'}; {os.cpu_count()} CPU cores")
            measure("Under load", use_wrk, targets, args.clients, args.seconds, args.rounds)
            measure("Unloaded", use_wrk, targets, 1, args.seconds, args.rounds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
