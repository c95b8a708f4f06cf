"""Run the whole platform on one machine (``make run``): every process of the process table
(``deploy/processes.py``), the migrations first.

    python -m deploy.local run        # prepare, then start and supervise every process
    python -m deploy.local prepare    # data folder, development keys, migrations only

Uses Redis at REDIS_URL and ComfyUI at COMFYUI_URL when they answer; otherwise starts
an embedded redis-server and the ComfyUI emulator (and says so: demo backend). Every
process runs in its own process group under honcho, its output prefixed with its name
(and copied to DATA_DIR/logs/platform.log). A process that dies is restarted with a
back-off (``deploy/supervisor.py``); Ctrl-C (or SIGTERM) stops them all.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import threading
import time
from urllib.parse import urlparse

import requests
from honcho.printer import Printer

from deploy.processes import BY_NAME, HTTP, JOB, PROCESSES, WORKER
from deploy.supervisor import Supervisor
from services.gateway.config import load_config as load_gateway_config
from services.render.config import load_config as load_render_config
from shared.config import Settings, load_settings
from shared.embedded import redis_answers, redis_server_binary, redis_server_command
from shared.migrate import upgrade_all
from shared.tokens import ensure_dev_keys

PY = sys.executable


def comfyui_answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/system_stats", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def prepare(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.media_dir.mkdir(parents=True, exist_ok=True)
    ensure_dev_keys(settings)
    upgrade_all(settings)


def _port(url: str, default: int) -> int:
    return urlparse(url).port or default


def service_commands(settings: Settings) -> dict[str, list[str]]:
    """The platform's own processes (``deploy/processes.py``), as run in production (gunicorn, celery)."""
    ports = {"gateway": settings.gateway_port, "auth": _port(settings.auth_url, 8001),
             "credits": _port(settings.credits_url, 8002), "gallery": _port(settings.gallery_url, 8003),
             "integrations": _port(settings.integrations_url, 8005), "safety": _port(settings.safety_url, 8004)}
    commands: dict[str, list[str]] = {}
    for process in PROCESSES:
        if process.kind == JOB:
            continue  # prepare() has run the migrations
        if process.kind == HTTP:
            host = os.environ.get("GATEWAY_HOST", "127.0.0.1") if process.name == "gateway" else "127.0.0.1"
            command = process.command(host=host, port=ports[process.name], python=PY)
            if process.name == "gateway":  # greenlets: every socket and request its own (services/gateway/ws.py)
                command[command.index("--worker-connections") + 1] = str(
                    load_gateway_config(settings).worker_connections)
        elif process.kind == WORKER:
            command = process.command(python=PY, args=(
                "--comfyui", load_render_config(settings).comfyui_url, "--name", f"render-{os.getpid()}",
                "--loglevel", settings.log_level))
        else:
            command = process.command(python=PY)
        commands[process.name] = command
    return commands


def process_env(settings: Settings, name: str) -> dict[str, str]:
    """What one process of the table needs in its environment beyond the platform's settings:
    its database pool, its metrics folder (gunicorn's workers add up their samples there) or port."""
    process = BY_NAME.get(name)
    if process is None:
        return {}
    env = {key: value for key, value in process.own_env().items() if key not in os.environ}
    if process.kind == HTTP:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(settings.data_dir / "metrics" / name)
    return env


def backing_services(settings: Settings, env: dict[str, str]) -> dict[str, list[str]]:
    """Embedded Redis and the ComfyUI emulator, only for what does not already answer."""
    comfyui_url = load_render_config(settings).comfyui_url
    commands: dict[str, list[str]] = {}
    if not redis_answers(settings.redis_url):
        binary = redis_server_binary()
        if binary is None:
            raise SystemExit("No Redis answers at REDIS_URL and no redis-server is installed.")
        port = _port(settings.redis_url, 6379)
        commands["redis"] = redis_server_command(binary, port, settings.data_dir / "redis")
        print(f"Redis: none answers at {settings.redis_url}; starting an embedded redis-server on port {port}")
    if not comfyui_answers(comfyui_url):
        port = _port(comfyui_url, 8188)
        commands["comfyui-emulator"] = [
            PY, "-m", "services.comfyui_emulator", "--host", "127.0.0.1", "--port", str(port),
            "--data-dir", str(settings.data_dir / "comfyui-emulator"),
            "--step-delay", os.environ.get("EMULATOR_STEP_DELAY", "0.15"),
            # Previews on by default so the demo shows the live preview as a real GPU host would.
            "--preview-method", os.environ.get("EMULATOR_PREVIEW_METHOD", "latent2rgb"),
        ]
        env["DEMO_BACKEND"] = "true"
        print(f"ComfyUI: none answers at {comfyui_url}; starting the built-in emulator "
              "(demo backend: images are synthetic, not from a real model)")
    return commands


def announce_when_ready(settings: Settings) -> None:
    url = f"http://127.0.0.1:{settings.gateway_port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/api/health", timeout=1).status_code == 200:
                print(f"\nOpen {url}\n", flush=True)
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)


class Tee:
    """The terminal, plus an append-only copy in ``DATA_DIR/logs/platform.log``."""

    def __init__(self, terminal, path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.terminal = terminal
        self.file = open(path, "a", buffering=1, encoding="utf-8")

    def write(self, text: str) -> None:
        self.terminal.write(text)
        self.file.write(text)

    def flush(self) -> None:
        self.terminal.flush()
        self.file.flush()

    def isatty(self) -> bool:
        return self.terminal.isatty()


def run(settings: Settings) -> int:
    prepare(settings)
    env = dict(os.environ, DATA_DIR=str(settings.data_dir), PYTHONUNBUFFERED="1")
    commands = backing_services(settings, env)
    commands.update(service_commands(settings))
    manager = Supervisor(Printer(Tee(sys.stdout, settings.data_dir / "logs" / "platform.log")),
                         stop_last=("redis", "comfyui-emulator"))
    for name, command in commands.items():
        # honcho runs commands through a shell; exec keeps one process per group leader.
        manager.add_process(name, f"exec {shlex.join(command)}", env={**env, **process_env(settings, name)})
    threading.Thread(target=announce_when_ready, args=(settings,), daemon=True).start()
    manager.loop()
    return manager.returncode or 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "prepare"), nargs="?", default="run")
    args = parser.parse_args()
    settings = load_settings()
    if args.command == "prepare":
        prepare(settings)
        print(f"Prepared {settings.data_dir}")
        return
    sys.exit(run(settings))


if __name__ == "__main__":
    main()
