"""The latency and the CPU the gateway adds to a proxied request, measured against the service itself.

    .venv/bin/python bench/gateway.py [--seconds 5] [--clients 16] [--rounds 2]

Starts the credits service and the gateway under gunicorn with exactly the options
``make run`` uses (``deploy.local.service_commands``), then sends the same requests straight
to the service (with the service token the gateway would add) and through the gateway,
alternating in rounds so both see the same machine: an anonymous one (``GET
/api/credits/pricing``) and a signed-in one (``GET /api/users/credits``, a user's balance,
with an access token), plus the anonymous one through the gateway with the same token header
("gw+token": credits ignores it there, so what the header alone costs the gateway shows apart
from what waiting on the slower signed-in answer costs it). Each figure comes with the CPU
seconds per request of the gateway's and the service's process trees (master and workers), the
number the machine's share of a request depends on; on a busy machine it is steadier than the
latency.
Load comes from ``wrk`` when installed (``apt-get install wrk``; C, so the load generator
takes little CPU from the servers), else from Python threads with keep-alive sessions.
A single sequential client is measured too: with 16 clients on 2 cores, latency is mostly
queueing for CPU, so the unloaded figure is the closest to the hop's own cost.
Last, the same gateway requests are sent 3,000 times each to a gateway app in this process (one
at a time, straight to its WSGI callable, the service still under gunicorn): CPU per request
of the gateway's own code, without gunicorn's, the kernel's and the load's share.
Rate limits are raised for the run (RATE_LIMIT_GLOBAL) and counted in a private namespace.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from _harness import CpuMeter, Load, Processes, access_token, is_ready, local_env, run_python_clients, run_wrk

from deploy.local import service_commands
from services.gateway.app import create_app
from services.gateway.config import load_config
from shared.config import load_settings
from shared.migrate import upgrade
from shared.tokens import ensure_dev_keys

ANONYMOUS_PATH = "/api/credits/pricing"
SIGNED_IN_PATH = "/api/users/credits"


@dataclass
class Target:
    name: str      # "direct", "gateway", or "gw+token" (the anonymous route with the token header)
    url: str
    path: str
    headers: dict[str, str]


@dataclass
class Measured:
    load: Load
    cpu_ms: dict[str, float]  # process tree → CPU ms per request


def run_load(target: Target, clients: int, seconds: float, use_wrk: bool) -> Load:
    """GET the target's path from ``clients`` keep-alive connections; any failed request ends the bench."""
    requests_ = [("GET", target.path, target.headers)]
    if use_wrk:
        load = run_wrk(target.url, requests_, clients, seconds)
    else:
        address = urlsplit(target.url)
        load = run_python_clients(address.hostname, address.port, requests_, clients, seconds)
    if load.errors:
        raise SystemExit(f"{target.url}{target.path}: {load.errors} of {load.requests} requests failed")
    return load


def run_measured(meter: CpuMeter, target: Target, clients: int, seconds: float, use_wrk: bool) -> Measured:
    meter.start()
    load = run_load(target, clients, seconds, use_wrk)
    used = meter.stop()
    return Measured(load, {name: seconds * 1000 / load.requests for name, seconds in used.items()})


def combine(results: list[Measured]) -> Measured:
    """Rounds combined: the median of each figure."""
    loads = [r.load for r in results]
    load = Load(requests=sum(r.requests for r in loads), rps=statistics.median(r.rps for r in loads),
                p50_ms=statistics.median(r.p50_ms for r in loads),
                p99_ms=statistics.median(r.p99_ms for r in loads), errors=0)
    return Measured(load, {name: statistics.median(r.cpu_ms[name] for r in results) for name in results[0].cpu_ms})


def measure(label: str, meter: CpuMeter, use_wrk: bool, targets: list[Target], clients: int,
            seconds: float, rounds: int) -> None:
    for target in targets:  # warm up pools, imports and caches
        run_load(target, clients, min(seconds, 2), use_wrk)
    collected: dict[tuple[str, str], list[Measured]] = {(t.path, t.name): [] for t in targets}
    for _ in range(rounds):
        for target in targets:
            collected[(target.path, target.name)].append(run_measured(meter, target, clients, seconds, use_wrk))
    combined = {key: combine(results) for key, results in collected.items()}
    print(f"\n{label}: {clients} keep-alive client(s), {rounds} × {seconds:g} s per target "
          f"(load average {os.getloadavg()[0]:.1f})")
    print(f"  {'GET':<22} {'target':<8} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>7} {'requests':>8} "
          f"{'gateway CPU ms':>14} {'credits CPU ms':>14}")
    for (path, name), result in combined.items():
        load = result.load
        print(f"  {path:<22} {name:<8} {load.p50_ms:7.2f} {load.p99_ms:7.2f} {load.rps:7.0f} {load.requests:8d} "
              f"{result.cpu_ms['gateway']:14.3f} {result.cpu_ms['credits']:14.3f}")
    for path in dict.fromkeys(path for path, _ in combined):
        direct, gateway = combined[(path, "direct")], combined[(path, "gateway")]
        print(f"  {path}: the gateway adds p50 {gateway.load.p50_ms - direct.load.p50_ms:+.2f} ms, "
              f"p99 {gateway.load.p99_ms - direct.load.p99_ms:+.2f} ms, throughput "
              f"{gateway.load.rps / direct.load.rps:.0%} of direct, "
              f"{gateway.cpu_ms['gateway']:.3f} ms of gateway CPU per request")
    for (path, name), result in combined.items():
        if name not in ("direct", "gateway"):
            print(f"  {path} as {name}: {result.cpu_ms['gateway'] - combined[(path, 'gateway')].cpu_ms['gateway']:+.3f} "
                  f"ms of gateway CPU per request against the same request without the token header")


IN_PROCESS_REQUESTS = 3000


def in_process(env: dict[str, str], targets: list[Target]) -> None:
    """CPU per request of a gateway app in this process, called as gunicorn would call it."""
    settings = load_settings(env)
    app = create_app(settings, load_config(settings, env))
    print(f"\nIn process: {IN_PROCESS_REQUESTS} requests one at a time to the gateway's WSGI callable")
    for target in targets:
        if target.name == "direct":
            continue
        wsgi_env = {"REQUEST_METHOD": "GET", "PATH_INFO": target.path, "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
                    "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
                    "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr, "wsgi.multithread": False,
                    "wsgi.multiprocess": True, "wsgi.run_once": False, "wsgi.version": (1, 0),
                    "HTTP_HOST": "127.0.0.1", "HTTP_USER_AGENT": "bench", "HTTP_ACCEPT": "*/*",
                    **{"HTTP_" + name.upper().replace("-", "_"): value for name, value in target.headers.items()}}

        def one() -> None:
            statuses: list[str] = []
            body = app({**wsgi_env, "wsgi.input": io.BytesIO()}, lambda status, headers, exc_info=None:
                       statuses.append(status))
            b"".join(body)
            getattr(body, "close", lambda: None)()
            if not statuses[0].startswith("200"):
                raise SystemExit(f"{target.path}: {statuses[0]}")

        for _ in range(300):  # warm up
            one()
        started = time.process_time()
        for _ in range(IN_PROCESS_REQUESTS):
            one()
        used_ms = (time.process_time() - started) * 1000 / IN_PROCESS_REQUESTS
        print(f"  {target.path:<22} {target.name:<8} {used_ms:.3f} ms of gateway CPU per request")


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
            credits = processes.start("credits", commands["credits"], env=env, ready=lambda: is_ready(f"{service_url}/readyz"))
            gateway = processes.start("gateway", commands["gateway"], env=env, ready=lambda: is_ready(f"{gateway_url}/healthz"))
            bearer = {"Authorization": "Bearer " + access_token(
                settings.jwt_private_key_path.read_text(), 1, "bench", dt.timedelta(hours=1))}
            service = {"X-Service-Token": token}
            targets = [Target("direct", service_url, ANONYMOUS_PATH, service),
                       Target("gateway", gateway_url, ANONYMOUS_PATH, {}),
                       Target("gw+token", gateway_url, ANONYMOUS_PATH, bearer),
                       Target("direct", service_url, SIGNED_IN_PATH, {**service, **bearer}),
                       Target("gateway", gateway_url, SIGNED_IN_PATH, bearer)]
            meter = CpuMeter({"credits": credits.pid, "gateway": gateway.pid})
            use_wrk = shutil.which("wrk") is not None and not args.python_client
            print(f"gateway and credits under gunicorn as `make run` starts them; load from "
                  f"{'wrk' if use_wrk else 'Python threads (http.client)'}; {os.cpu_count()} CPU cores")
            measure("Under load", meter, use_wrk, targets, args.clients, args.seconds, args.rounds)
            measure("Unloaded", meter, use_wrk, targets, 1, args.seconds, args.rounds)
            in_process(env, targets)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
