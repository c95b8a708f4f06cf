"""Queue API figures over each broker, in one run:

    .venv/bin/python bench/queue_api.py [--requests 200] [--latency 50] [--brokers redis,rabbitmq]
                                        [--backend sqlite|mariadb]

For each broker, starts the whole platform as ``make run`` does (``python -m deploy.local
run``: gateway, auth, credits, gallery, integrations with its queue bridge, a render worker,
the ComfyUI emulator at 0.01 s per step, an embedded redis-server) on a throwaway database,
with ``BROKER_URL`` pointing at that broker (RabbitMQ: ``BENCH_AMQP_URL``, default
guest@127.0.0.1:5672), and a service account with room for every request.

(a) admitted per second: ``--requests`` requests published at once by one client; the rate
    of their ``request.accepted`` replies (timestamps the bridge writes), first to last.
(b) message → first progress: ``--latency`` requests sent one at a time with ``progress:
    true`` (each after the previous finished); client clock from publishing to receiving the
    first ``job.progress`` reply (p50/p99). It includes one 0.01 s emulator step.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

from _harness import PROJECT_ROOT, Processes, fresh_database, is_ready, percentile

import requests

sys.path.insert(0, str(PROJECT_ROOT / "clients" / "python"))

from aigc_queue_client import FINAL_TYPES, QueueClient  # noqa: E402
from shared.embedded import free_port  # noqa: E402

PY = sys.executable
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
PARAMS = {"prompt": "a benchmark banner", "model": "sd15_demo.safetensors", "size": "64x64", "steps": 2}
PASSWORD = "bench-admin-1"


def start_platform(processes: Processes, workdir: Path, database_url: str, broker: str) -> tuple[str, dict]:
    gateway_port = free_port()
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    env = {**os.environ, "APP_ENV": "test", "DATA_DIR": str(workdir / f"data-{broker}"), "DATABASE_URL": database_url,
           "REDIS_URL": redis_url, "SERVICE_TOKEN": "bench-service-token", "GATEWAY_PORT": str(gateway_port),
           "AUTH_PORT": str(free_port()), "CREDITS_PORT": str(free_port()), "GALLERY_PORT": str(free_port()),
           "INTEGRATIONS_PORT": str(free_port()), "COMFYUI_URL": f"http://127.0.0.1:{free_port()}",
           "EMULATOR_STEP_DELAY": "0.01", "EMULATOR_PREVIEW_METHOD": "none", "LOG_LEVEL": "WARNING",
           "RENDER_QUEUE": f"render-bench-{uuid.uuid4().hex[:6]}", "QUEUE_API_PREFIX": f"bench-{uuid.uuid4().hex[:6]}",
           "RATE_LIMIT_GLOBAL": "100000/minute", "RATE_LIMIT_LOGIN": "1000/minute",
           "CREDITS_PRICING": '{"text2img": 1}'}
    if broker == "rabbitmq":
        env["BROKER_URL"] = AMQP_URL
    base = f"http://127.0.0.1:{gateway_port}"
    processes.start(f"platform-{broker}", [PY, "-m", "deploy.local", "run"], env=env, timeout=180,
                    ready=lambda: is_ready(f"{base}/api/health") and _worker_live(base))
    return base, env


def _worker_live(base: str) -> bool:
    try:
        return requests.get(f"{base}/api/models", timeout=2).json()["data"]["liveWorkers"] > 0
    except (requests.RequestException, ValueError, KeyError):
        return False


def service_account(base: str, env: dict) -> tuple[str, dict]:
    name = f"b{uuid.uuid4().hex[:10]}"
    subprocess.run([PY, "-m", "flask", "--app", "services.auth.app:create_app", "auth", "create-admin", name,
                    f"{name}@example.com", "--password", PASSWORD], env=env, cwd=PROJECT_ROOT, check=True,
                   capture_output=True)
    login = requests.post(f"{base}/api/users/login", json={"username": name, "password": PASSWORD}, timeout=10)
    data = login.json()["data"]
    created = requests.post(f"{base}/api/admin/service-accounts", timeout=30,
                            headers={"Authorization": f"Bearer {data['accessToken']}"},
                            json={"name": f"svc{uuid.uuid4().hex[:10]}", "ownerId": data["user"]["id"],
                                  "budget": 1_000_000, "maxActiveJobs": 1000})
    created.raise_for_status()
    account = created.json()["data"]
    return account["serviceAccount"]["name"], account["credentials"]


def _ts(reply: dict) -> float:
    return datetime.fromisoformat(reply["ts"].replace("Z", "+00:00")).timestamp()


def admission_rate(client: QueueClient, count: int) -> float:
    ids = {client.submit("text2img", PARAMS) for _ in range(count)}
    accepted: list[float] = []
    finished = 0
    for reply in client.results(idle_timeout=60):
        if reply["requestId"] not in ids:
            continue
        if reply["type"] == "request.accepted":
            accepted.append(_ts(reply))
        elif reply["type"] == "request.rejected":
            raise SystemExit(f"rejected: {reply['data']}")
        if reply["type"] in FINAL_TYPES:
            finished += 1
            if finished == count:
                break
    if len(accepted) != count:
        raise SystemExit(f"only {len(accepted)} of {count} requests were accepted")
    return (count - 1) / (max(accepted) - min(accepted))


def first_progress(client: QueueClient, count: int) -> list[float]:
    delays = []
    for _ in range(count):
        sent = time.time()
        request_id = client.submit("text2img", {**PARAMS, "steps": 4}, progress=True)
        first = None
        for reply in client.results(idle_timeout=30):
            if reply["requestId"] != request_id:
                continue
            if reply["type"] == "job.progress" and first is None:
                first = time.time() - sent
            if reply["type"] in FINAL_TYPES:
                break
        if first is None:
            raise SystemExit(f"no progress for {request_id}")
        delays.append(first)
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--latency", type=int, default=50)
    parser.add_argument("--brokers", default="redis,rabbitmq")
    parser.add_argument("--backend", choices=("sqlite", "mariadb"), default="sqlite")
    args = parser.parse_args()
    rows = []
    for broker in args.brokers.split(","):
        with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp, fresh_database(args.backend, Path(tmp)) as url, \
                Processes(Path(tmp)) as processes:
            base, env = start_platform(processes, Path(tmp), url, broker)
            name, credentials = service_account(base, env)
            broker_url = env.get("BROKER_URL") or env["REDIS_URL"]
            with QueueClient(broker_url, name, credentials["keyId"], credentials["secret"],
                             env["QUEUE_API_PREFIX"]) as client:
                rate = admission_rate(client, args.requests)
                delays = first_progress(client, args.latency)
            rows.append((broker, rate, percentile(delays, 0.5) * 1000, percentile(delays, 0.99) * 1000))
    print(f"queue API on {args.backend}: {args.requests} requests at once; {args.latency} sequential with progress")
    print(f"{'broker':<10} {'admitted/s':>11} {'first progress p50':>19} {'p99':>9}")
    for broker, rate, p50, p99 in rows:
        print(f"{broker:<10} {rate:>11.1f} {p50:>16.0f} ms {p99:>6.0f} ms")


if __name__ == "__main__":
    main()
