"""``/metrics`` answers on every background process and the render worker of the process table,
each started as every deployment starts it (``Process.command``) on its own ``METRICS_PORT``,
against a private redis-server and a migrated SQLite database; a worker whose ComfyUI does not
answer reports it down while it waits. (HTTP processes serve it on their own port:
tests/test_authorization_matrix.py and tests/shared/test_metrics.py.)"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from deploy.processes import BACKGROUND, PROCESSES, WORKER
from shared.config import PROJECT_ROOT, load_settings
from shared.embedded import free_port, redis_answers, redis_server_binary, redis_server_command
from shared.migrate import SERVICES, upgrade
from shared.tokens import ensure_dev_keys
from tests.conftest import TEST_SERVICE_TOKEN

SCRAPED = [process for process in PROCESSES if process.kind in (BACKGROUND, WORKER)]


def _metrics(port: int) -> str | None:
    try:
        response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    except requests.RequestException:
        return None
    return response.text if response.status_code == 200 else None


def test_every_background_process_and_the_worker_serve_metrics(tmp_path):
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server binary")
    redis_port = free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    redis_proc = subprocess.Popen(redis_server_command(binary, redis_port, tmp_path / "redis"),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    env = {"APP_ENV": "test", "DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}",
           "REDIS_URL": redis_url, "SERVICE_TOKEN": TEST_SERVICE_TOKEN, "LOG_LEVEL": "WARNING",
           "JWT_PRIVATE_KEY_PATH": str(tmp_path / "keys" / "private.pem"),
           "JWT_PUBLIC_KEY_PATH": str(tmp_path / "keys" / "public.pem"), "METRICS_HOST": "127.0.0.1"}
    procs: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        deadline = time.monotonic() + 10
        while not redis_answers(redis_url):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)
        settings = load_settings(env)
        settings.data_dir.mkdir(parents=True)
        ensure_dev_keys(settings)
        for service in SERVICES:
            upgrade(service, settings.database_url)
        for process in SCRAPED:
            port = free_port()
            args = ("--comfyui", "http://127.0.0.1:9", "--name", "metrics-test") if process.kind == WORKER else None
            log = open(tmp_path / f"{process.name}.log", "wb")
            procs[process.name] = (subprocess.Popen(
                process.command(python=sys.executable, args=args), cwd=PROJECT_ROOT, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **env, **process.own_env(), "METRICS_PORT": str(port)}), port)
            log.close()
        silent = set(procs)
        deadline = time.monotonic() + 120
        while silent and time.monotonic() < deadline:
            silent = {name for name in silent if not _metrics(procs[name][1])}
            time.sleep(0.5)
        logs = {name: (tmp_path / f"{name}.log").read_text(errors="replace")[-1500:] for name in silent}
        assert not silent, f"no /metrics from {sorted(silent)}: {logs}"
        comfyui_up = [sample for family in text_string_to_metric_families(_metrics(procs["worker"][1]))
                      for sample in family.samples if sample.name == "render_comfyui_up"]
        assert [(s.labels["worker"].split("@")[0], s.labels["comfyui"], s.value) for s in comfyui_up] == [
            ("metrics-test", "http://127.0.0.1:9", 0.0)]
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        redis_proc.terminate()
        redis_proc.wait()
