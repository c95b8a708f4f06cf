"""Fleet scheduling figures (prints; nothing here asserts a time):

    .venv/bin/python bench/fleet.py [--workers 1,2,4,8,12] [--job-seconds 2] [--backend mariadb|sqlite]

Starts a private stack: redis-server, credits and the gateway (gunicorn), the scheduler
(``python -m services.render_worker.scheduler``), and one ComfyUI emulator per render
worker (``python -m services.render_worker``, 2 prompts in flight), emulating a GPU of fixed
per-step cost (``--step-delay``; a job is ``--job-seconds`` of steps).

(a) throughput at 1, 2, 4, 8, 12 workers on the same job mix (10 jobs per worker, 10 users):
    jobs per second from the first submit to the last job finished, as a multiple of one
    worker's (the scaling factor, against N), and the scheduler process's CPU per job
    (its user + system time over the run ÷ jobs). Every process shares this machine's cores.
(b) fairness on 4 workers: user A submits 40 jobs of 1 s, users B–E 5 each a moment later;
    each user's mean wait (claim − admission) and Jain's index over the users' shares of the
    jobs started while all five still had jobs waiting.
(c) affinity on 4 workers: a random stream of jobs for 2 checkpoints, model switches per 100
    jobs (a worker's job whose checkpoint differs from its previous job's), with the default
    affinity wait and with affinity off (``RENDER_AFFINITY_WAIT_SECONDS=0``). Each emulator
    holds one checkpoint and a switch costs it ``--switch-seconds`` (its ``model_load_seconds``,
    as loading a checkpoint costs a real GPU), so the throughput printed is measured with the
    switches' cost.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _harness import Processes, access_token, fresh_database, is_ready, private_stack, wait_for

import psutil
import requests
from sqlalchemy import bindparam, text

from services.credits.client import CreditsClient
from services.render.service import CATALOG_CACHE_SECONDS
from shared.db import Database
from shared.embedded import free_port

PY = sys.executable
TOKEN = "bench-service-token"
MODELS = ("sd15_demo.safetensors", "sdxl_demo.safetensors")
STEPS = 20


class Fleet:
    def __init__(self, workdir: Path, database_url: str, processes: Processes, step_delay: float) -> None:
        self.workdir = workdir
        self.processes = processes
        self.step_delay = step_delay
        stack = private_stack(processes, workdir, database_url, TOKEN, RENDER_QUEUE="fleet",
                              RENDER_USER_ACTIVE_LIMIT="1000", RENDER_HEARTBEAT_SECONDS="2", SIGNUP_BONUS="100000")
        self.settings, self.process_env, self.private_key = stack.settings, stack.process_env, stack.private_key
        self.db = Database(database_url)
        stack.start_gunicorn(processes, "credits", "services.credits.app", self.settings.credits_url, workers=2,
                             threads=16)
        self.gateway = f"http://127.0.0.1:{self.settings.gateway_port}"
        stack.start_gunicorn(processes, "gateway", "services.gateway.app", self.gateway, workers=2, threads=32)
        self.scheduler: psutil.Process | None = None
        self.start_scheduler({})
        self.workers: list[tuple[str, psutil.Process, psutil.Process]] = []  # name, emulator, worker
        self.emulator_urls: dict[str, str] = {}

    def start_scheduler(self, env: dict[str, str]) -> None:
        if self.scheduler is not None:
            os.killpg(self.scheduler.pid, signal.SIGTERM)
            self.scheduler.wait(timeout=20)
        proc = self.processes.start(f"scheduler-{len(self.processes.procs)}",
                                    [PY, "-m", "services.render_worker.scheduler"],
                                    env={**self.process_env, **env})
        self.scheduler = psutil.Process(proc.pid)

    def set_workers(self, count: int) -> None:
        """Grow or shrink the fleet to ``count`` workers, each with its own emulator."""
        while len(self.workers) > count:
            name, emulator, worker = self.workers.pop()
            self.emulator_urls.pop(name)
            for proc in (worker, emulator):
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
        while len(self.workers) < count:
            name = f"w{len(self.workers) + 1}"
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            emulator = self.processes.start(
                f"emulator-{name}", [PY, "-m", "services.comfyui_emulator", "--port", str(port), "--data-dir",
                                     str(self.workdir / f"comfy-{name}"), "--step-delay", str(self.step_delay),
                                     "--load-delay", "0"],
                env=self.process_env, ready=lambda: is_ready(url + "/system_stats"), timeout=30)
            worker = self.processes.start(f"worker-{name}", [PY, "-m", "services.render_worker", "--comfyui", url,
                                                             "--name", name, "--loglevel", "WARNING"],
                                          env=self.process_env)
            self.workers.append((name, psutil.Process(emulator.pid), psutil.Process(worker.pid)))
            self.emulator_urls[name] = url
        wait_for(lambda: len(self.get("/api/models")["workers"]) == count, 120, f"{count} render workers")
        time.sleep(CATALOG_CACHE_SECONDS + 0.1)  # every gateway process sees them

    def configure_emulators(self, **update) -> None:
        for url in self.emulator_urls.values():
            requests.post(url + "/emulator/config", json=update, timeout=5).raise_for_status()

    def get(self, path: str) -> dict:
        return requests.get(self.gateway + path, timeout=10).json()["data"]

    def user(self) -> str:
        user_id = random.randint(10**7, 10**9)
        credits = CreditsClient(self.settings.credits_url, TOKEN)
        credits.open_account(user_id)
        return access_token(self.private_key, user_id, f"f{user_id}", dt.timedelta(hours=2))

    def submit(self, token: str, model: str = MODELS[0], steps: int = STEPS) -> str:
        payload = {"prompt": f"fleet {uuid.uuid4().hex}", "model": model, "size": "64x64", "steps": steps}
        response = requests.post(self.gateway + "/api/generate", json=payload, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"})
        if response.status_code != 202:
            raise SystemExit(f"admission failed: {response.status_code} {response.text}")
        return response.json()["data"]["job"]["id"]

    def rows(self, job_ids: list[str]) -> list[dict]:
        with self.db.engine.connect() as connection:
            found = connection.execute(text(
                "SELECT id, user_id, model, worker, status, created_at, started_at, finished_at FROM render_jobs "
                "WHERE id IN :ids").bindparams(bindparam("ids", expanding=True)),
                {"ids": job_ids})
            return [dict(row._mapping) for row in found]

    def wait_finished(self, job_ids: list[str], timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.rows(job_ids)
            if all(row["status"] in ("succeeded", "failed", "cancelled") for row in rows) and len(rows) == len(job_ids):
                failed = [row for row in rows if row["status"] != "succeeded"]
                if failed:
                    raise SystemExit(f"{len(failed)} jobs did not succeed: {failed[:3]}")
                return rows
            time.sleep(0.2)
        raise SystemExit("timed out waiting for the jobs")

    def cpu_seconds(self) -> float:
        times = self.scheduler.cpu_times()
        return times.user + times.system


def _ts(value) -> float:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.timezone.utc).timestamp()


def throughput(fleet: Fleet, counts: list[int], job_seconds: float, per_worker: int) -> None:
    print(f"(a) throughput: jobs of {job_seconds:g} s (emulated GPU, fixed per-step cost), {per_worker} per worker, "
          "10 users")
    tokens = [fleet.user() for _ in range(10)]
    base = None
    for count in counts:
        fleet.set_workers(count)
        jobs = per_worker * count
        cpu_before = fleet.cpu_seconds()
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            job_ids = list(pool.map(lambda n: fleet.submit(tokens[n % len(tokens)]), range(jobs)))
        rows = fleet.wait_finished(job_ids, 60 + jobs * job_seconds)
        wall = max(_ts(r["finished_at"]) for r in rows) - min(_ts(r["created_at"]) for r in rows)
        cpu_ms = (fleet.cpu_seconds() - cpu_before) * 1000 / jobs
        rate = jobs / wall
        base = base or rate
        ideal = 1 / job_seconds
        print(f"    N={count:>2}: {rate:5.2f} jobs/s ({rate / ideal:5.2f} × one GPU's {ideal:.2f}); "
              f"scaling {rate / base:5.2f} = {rate / base / count:4.2f} × N; scheduler CPU {cpu_ms:4.1f} ms/job "
              f"(wall {time.monotonic() - started:.1f} s)")


def jain(shares: list[float]) -> float:
    return sum(shares) ** 2 / (len(shares) * sum(x * x for x in shares)) if any(shares) else float("nan")


def fairness(fleet: Fleet, step_delay: float) -> None:
    fleet.set_workers(4)
    steps = max(1, round(1.0 / step_delay))
    print(f"(b) fairness on 4 workers: A submits 40 jobs of {steps * step_delay:g} s, B–E 5 each 0.5 s later")
    users = {name: fleet.user() for name in "ABCDE"}
    submitted: dict[str, list[str]] = {name: [] for name in users}
    with ThreadPoolExecutor(4) as pool:
        submitted["A"] = list(pool.map(lambda _: fleet.submit(users["A"], steps=steps), range(40)))
    time.sleep(0.5)
    with ThreadPoolExecutor(4) as pool:
        for name in "BCDE":
            submitted[name] = list(pool.map(lambda _, n=name: fleet.submit(users[n], steps=steps), range(5)))
    every = [job for jobs in submitted.values() for job in jobs]
    rows = {row["id"]: row for row in fleet.wait_finished(every, 300)}
    for name, jobs in submitted.items():
        waits = [_ts(rows[j]["started_at"]) - _ts(rows[j]["created_at"]) for j in jobs]
        print(f"    user {name}: {len(jobs):>2} jobs, mean wait {statistics.mean(waits):5.1f} s, "
              f"max {max(waits):5.1f} s")
    # All five are backlogged from B–E's arrival until the first of them has its last job started.
    window_start = max(_ts(rows[j]["created_at"]) for name in "BCDE" for j in submitted[name])
    window_end = min(max(_ts(rows[j]["started_at"]) for j in jobs) for jobs in submitted.values())
    shares = [sum(window_start <= _ts(rows[j]["started_at"]) <= window_end for j in jobs)
              for jobs in submitted.values()]
    print(f"    jobs started per user while all were backlogged ({window_end - window_start:.1f} s): "
          f"{dict(zip(users, shares))}; Jain's index {jain(shares):.3f}")


def affinity(fleet: Fleet, jobs: int, switch_seconds: float, wait: str) -> None:
    fleet.set_workers(4)
    print(f"(c) affinity on 4 workers: {jobs} jobs, random checkpoint of {len(MODELS)} per job; "
          f"a checkpoint switch costs an emulator {switch_seconds:g} s")
    fleet.configure_emulators(model_load_seconds=switch_seconds)
    rng = random.Random(7)
    stream = [rng.choice(MODELS) for _ in range(jobs)]
    for label, env in ((f"affinity (wait {wait} s)", {"RENDER_AFFINITY_WAIT_SECONDS": wait}),
                       ("affinity off", {"RENDER_AFFINITY_WAIT_SECONDS": "0"})):
        fleet.start_scheduler(env)
        tokens = [fleet.user() for _ in range(4)]
        with ThreadPoolExecutor(8) as pool:
            job_ids = list(pool.map(lambda n: fleet.submit(tokens[n % 4], model=stream[n]), range(jobs)))
        rows = fleet.wait_finished(job_ids, 600)
        switches = 0
        by_worker: dict[str, list[dict]] = {}
        for row in rows:
            by_worker.setdefault(row["worker"], []).append(row)
        for runs in by_worker.values():
            runs.sort(key=lambda r: _ts(r["started_at"]))
            switches += sum(1 for before, after in zip(runs, runs[1:]) if before["model"] != after["model"])
        wall = max(_ts(r["finished_at"]) for r in rows) - min(_ts(r["created_at"]) for r in rows)
        print(f"    {label:>22}: {switches * 100 / jobs:5.1f} switches per 100 jobs; {jobs / wall:4.2f} jobs/s")
    fleet.configure_emulators(model_load_seconds=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2,4,8,12")
    parser.add_argument("--job-seconds", type=float, default=2.0)
    parser.add_argument("--jobs-per-worker", type=int, default=10)
    parser.add_argument("--affinity-jobs", type=int, default=100)
    parser.add_argument("--affinity-wait", default="5")
    parser.add_argument("--switch-seconds", type=float, default=5.0)
    parser.add_argument("--only", choices=("throughput", "fairness", "affinity"))
    parser.add_argument("--backend", choices=("mariadb", "sqlite"), default="mariadb")
    args = parser.parse_args()
    step_delay = args.job_seconds / STEPS
    print(f"fleet bench: {psutil.cpu_count()} cores, {args.backend}")
    with tempfile.TemporaryDirectory() as tmp, Processes(Path(tmp)) as processes, \
            fresh_database(args.backend, Path(tmp)) as database_url:
        fleet = Fleet(Path(tmp), database_url, processes, step_delay)
        if args.only in (None, "fairness"):
            fairness(fleet, step_delay)
        if args.only in (None, "affinity"):
            affinity(fleet, args.affinity_jobs, args.switch_seconds, args.affinity_wait)
        if args.only in (None, "throughput"):
            throughput(fleet, [int(n) for n in args.workers.split(",")], args.job_seconds, args.jobs_per_worker)


if __name__ == "__main__":
    main()
