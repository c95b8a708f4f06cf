"""The process table: every process of the platform, declared once.

``deploy/local.py`` (``make run``) starts what this table says; ``deploy/compose.yaml`` and
the Kubernetes manifests (``deploy/k8s/``) are checked against it by
``tests/deploy/test_process_table.py``: a process added here and missing there (or the
other way round) fails the tests.

Kinds:

- ``http``: a gunicorn server; probes ``/healthz`` (alive) and ``/readyz`` (its database
  and Redis answer); ``/metrics`` on its own port (multi-process safe, ``deploy/gunicorn_conf.py``).
- ``background``: a loop with no HTTP API; ``/metrics`` on ``metrics_port`` (``METRICS_PORT``).
- ``worker``: a render worker, one per ComfyUI (one per GPU); ``/metrics`` on ``metrics_port``.
- ``job``: runs once before the others start (migrations).

``singleton`` processes are run once per deployment (more would do no harm but no good);
the others scale by ``replicas``.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

from shared.http_transport import SERVER_KEEPALIVE_SECONDS
from shared.web import ACCESS_LOG_FORMAT

HTTP, BACKGROUND, WORKER, JOB = "http", "background", "worker", "job"
KINDS = (HTTP, BACKGROUND, WORKER, JOB)
# Database connections per engine (DB_POOL_SIZE + DB_MAX_OVERFLOW), by kind: no more than the
# process can use at once. A gthread server process runs 8 requests at once (4 kept + 4 at a
# peak); the gevent gateway's greenlets queue for its 8 + 8; a background loop runs one pass at
# a time (2 + 2 leaves room for a probe); a render worker holds a connection only inside the short
# transactions of its RENDER_PROMPTS_IN_FLIGHT (2) jobs, never across ComfyUI's work (2 + 2).
DB_POOLS = {HTTP: (4, 4), BACKGROUND: (2, 2), WORKER: (2, 2), JOB: (1, 1)}
GATEWAY_DB_POOL = (8, 8)
# Settings every process reads (README's configuration tables say what each means).
COMMON_ENV = ("APP_ENV", "DATABASE_URL", "REDIS_URL", "SERVICE_TOKEN", "JWT_PUBLIC_KEY_PATH", "LOG_LEVEL",
              "LOG_FORMAT")
# Where the callers of an HTTP process find it (the render API is mounted by the gateway).
URL_SETTING = {"gateway": "RENDER_URL", "auth": "AUTH_URL", "credits": "CREDITS_URL", "gallery": "GALLERY_URL",
               "integrations": "INTEGRATIONS_URL", "safety": "SAFETY_URL"}


@dataclass(frozen=True)
class Process:
    name: str
    kind: str
    # http: the WSGI app ("services.auth.app:create_app()"); others: the module run with ``python -m``.
    target: str
    description: str
    port: int | None = None  # http: where it listens (and serves /metrics)
    metrics_port: int | None = None  # background and worker: where /metrics answers
    env: tuple[str, ...] = ()  # settings beyond COMMON_ENV and the URLs of ``calls`` this process needs
    calls: tuple[str, ...] = ()  # the HTTP processes it calls (NetworkPolicies let only these in)
    replicas: int = 1
    singleton: bool = False
    gunicorn: tuple[str, ...] = ()  # http: the worker options
    gunicorn_workers: int = 2
    args: tuple[str, ...] = field(default=())  # extra arguments after the module

    @property
    def db_pool(self) -> tuple[int, int]:
        return GATEWAY_DB_POOL if self.name == "gateway" else DB_POOLS[self.kind]

    def own_env(self) -> dict[str, str]:
        """What this process sets for itself unless the operator did: its pool, its metrics port."""
        env = {"DB_POOL_SIZE": str(self.db_pool[0]), "DB_MAX_OVERFLOW": str(self.db_pool[1])}
        if self.metrics_port:
            env["METRICS_PORT"] = str(self.metrics_port)
        return env

    @property
    def needed_env(self) -> tuple[str, ...]:
        return (*COMMON_ENV, *(URL_SETTING[name] for name in self.calls), *self.env)

    @property
    def probes(self) -> dict[str, str]:
        return {"liveness": "/healthz", "readiness": "/readyz"} if self.kind == HTTP else {}

    @property
    def scrape_port(self) -> int | None:
        """Where Prometheus scrapes ``/metrics``."""
        return self.port if self.kind == HTTP else self.metrics_port

    def command(self, *, host: str = "0.0.0.0", port: int | None = None, python: str = "python",
                args: tuple[str, ...] | None = None) -> list[str]:
        """The command line, as every deployment runs it (``host``/``port`` for http)."""
        if self.kind == HTTP:
            return [python, "-m", "gunicorn", "--config", "python:deploy.gunicorn_conf", *self.gunicorn,
                    "--workers", str(self.gunicorn_workers), "--bind", f"{host}:{port or self.port}",
                    "--timeout", "120", "--keep-alive", str(SERVER_KEEPALIVE_SECONDS), "--graceful-timeout", "5",
                    "--access-logfile", "-", "--access-logformat", ACCESS_LOG_FORMAT, self.target]
        return [python, "-m", self.target, *(self.args if args is None else args)]


THREADS = ("--worker-class", "gthread", "--threads", "8")
# The gateway: a greenlet per request and per WebSocket, served by gevent's own HTTP server
# (deploy/gevent_worker.py); --worker-connections is WS_MAX_PER_PROCESS plus 1000 for HTTP
# (deploy/local.py fills in the configured figure).
GATEWAY_WORKER = "deploy.gevent_worker.GeventServerWorker"
GEVENT = ("--worker-class", GATEWAY_WORKER, "--worker-connections", "6000")

AUTH_CALLS = ("credits", "gallery", "safety")
CREDITS_CALLS = ("auth", "gallery", "gateway")
GALLERY_CALLS = ("auth", "gateway", "safety")
INTEGRATIONS_CALLS = ("auth", "credits", "gateway")
RENDER_CALLS = ("credits", "gallery")

PROCESSES: tuple[Process, ...] = (
    Process("migrate", JOB, "shared.migrate", "applies every service's migrations, once before the rest",
            args=("upgrade",), env=("AUTH_DATABASE_URL", "CREDITS_DATABASE_URL", "GALLERY_DATABASE_URL",
                                    "RENDER_DATABASE_URL", "INTEGRATIONS_DATABASE_URL", "SAFETY_DATABASE_URL")),
    Process("gateway", HTTP, "services.gateway.app:create_app()",
            "the public door: proxy, render API, /ws, web client, media", port=8000, gunicorn=GEVENT,
            calls=("auth", "credits", "gallery", "integrations", "safety"),
            env=("PUBLIC_URL", "TRUSTED_PROXIES", "BROKER_URL", "DATA_DIR"), replicas=2),
    Process("auth", HTTP, "services.auth.app:create_app()", "accounts, sessions, tokens, single sign-on",
            port=8001, gunicorn=THREADS, calls=AUTH_CALLS, env=("JWT_PRIVATE_KEY_PATH", "PUBLIC_URL", "SMTP_HOST"),
            replicas=2),
    Process("credits", HTTP, "services.credits.app:create_app()", "balances, holds, ledger", port=8002,
            gunicorn=THREADS, calls=CREDITS_CALLS, replicas=2),
    Process("gallery", HTTP, "services.gallery.app:create_app()", "works, search, notifications, media files",
            port=8003, gunicorn=THREADS, calls=GALLERY_CALLS, env=("DATA_DIR",), replicas=2),
    Process("integrations", HTTP, "services.integrations.app:create_app()", "service accounts, webhooks",
            port=8005, gunicorn=THREADS, gunicorn_workers=1, calls=INTEGRATIONS_CALLS, env=("INTEGRATIONS_SECRET",)),
    Process("safety", HTTP, "services.safety.app:create_app()", "the content term list and the audit log",
            port=8004, gunicorn=THREADS, gunicorn_workers=1, env=("DATA_DIR",)),
    Process("auth-outbox", BACKGROUND, "services.auth.relay", "sends the user.deleted announcements Redis missed",
            metrics_port=9101, singleton=True, calls=AUTH_CALLS),
    Process("credits-sweeper", BACKGROUND, "services.credits.sweeper", "releases expired holds",
            metrics_port=9102, singleton=True, calls=CREDITS_CALLS),
    Process("credits-events", BACKGROUND, "services.credits.events", "closes deleted users' accounts",
            metrics_port=9103, calls=CREDITS_CALLS),
    Process("gallery-events", BACKGROUND, "services.gallery.events", "removes deleted users' works and files",
            metrics_port=9104, calls=GALLERY_CALLS, env=("DATA_DIR",)),
    Process("render-events", BACKGROUND, "services.render.events",
            "removes deleted users' jobs, outputs, uploads and files", metrics_port=9109, calls=RENDER_CALLS,
            env=("DATA_DIR",)),
    Process("integrations-events", BACKGROUND, "services.integrations.events", "removes deleted users' webhooks",
            metrics_port=9105, calls=INTEGRATIONS_CALLS),
    Process("queue-bridge", BACKGROUND, "services.integrations.queue", "render requests over the broker",
            metrics_port=9106, calls=INTEGRATIONS_CALLS, env=("BROKER_URL",)),
    Process("webhooks", BACKGROUND, "services.integrations.webhooks", "delivers signed webhook POSTs",
            metrics_port=9107, calls=INTEGRATIONS_CALLS, env=("INTEGRATIONS_SECRET",)),
    Process("safety-recorder", BACKGROUND, "services.safety.recorder",
            "stores blocks, flags and review decisions in the audit log; applies its retention", metrics_port=9110,
            env=("DATA_DIR",)),
    Process("scheduler", BACKGROUND, "services.render_worker.scheduler",
            "releases waiting jobs to workers' own queues: fair share, model affinity, lanes", metrics_port=9111,
            env=("BROKER_URL",)),
    Process("reconciler", BACKGROUND, "services.render_worker.reconciler",
            "jobs of dead workers, unsettled credits; queue depth metrics", metrics_port=9108,
            calls=RENDER_CALLS, env=("BROKER_URL", "DATA_DIR")),
    Process("worker", WORKER, "services.render_worker", "a render worker: one per ComfyUI (GPU)",
            metrics_port=9200, args=("--comfyui", "http://127.0.0.1:8188", "--name", "render"), calls=RENDER_CALLS,
            env=("COMFYUI_URL", "BROKER_URL", "DATA_DIR", "RENDER_PROMPTS_IN_FLIGHT", "METRICS_PORT")),
)

BY_NAME = {process.name: process for process in PROCESSES}


def connection_budget(workers: int, replicas: dict[str, int] | None = None) -> int:
    """Most database connections the platform can hold at once with ``workers`` render workers:
    each engine's pool plus overflow, per gunicorn worker process and per replica (``replicas``
    overrides the table's). The render worker's figure is ``min(pool + overflow, prompts in flight)``:
    only its prompt threads touch the database."""
    total = 0
    for process in PROCESSES:
        if process.kind == JOB:
            continue  # the migration runs before the rest, and alone
        size, overflow = process.db_pool
        if process.kind == WORKER:
            total += workers * min(size + overflow, 2)
            continue
        count = (replicas or {}).get(process.name, 1 if process.singleton else process.replicas)
        processes = count * (process.gunicorn_workers if process.kind == HTTP else 1)
        total += processes * (size + overflow)
    return total


def gateway_worker_connections() -> int:
    """The gateway's ``--worker-connections``: WS_MAX_PER_PROCESS plus room for HTTP."""
    from services.gateway.config import load_config
    from shared.config import load_settings

    return load_config(load_settings()).worker_connections


# The container's HEALTHCHECK reads which process ``run`` started (the image runs any of them).
RUNNING_FILE = "/tmp/aigc-process"


def run(name: str, extra: list[str]) -> None:
    """Replace this process with the table's process ``name`` (the image's entry point):
    http processes listen on ``0.0.0.0:$PORT`` (default: the table's port); a worker takes
    ``extra`` as its arguments (``--comfyui URL --name NAME``), others append them."""
    import os

    process = BY_NAME.get(name)
    if process is None:
        raise SystemExit(f"no process {name!r}; the table has: {', '.join(BY_NAME)}")
    for key, value in process.own_env().items():
        os.environ.setdefault(key, value)
    port = int(os.environ.get("PORT") or process.port or 0) or None
    if process.kind == WORKER:
        command = process.command(python=sys.executable, args=tuple(extra) or process.args)
    else:
        command = process.command(python=sys.executable, port=port) + extra
    if process.name == "gateway":
        command[command.index("--worker-connections") + 1] = str(gateway_worker_connections())
    try:
        with open(RUNNING_FILE, "w", encoding="utf-8") as handle:
            handle.write(name)
    except OSError:
        pass  # only the HEALTHCHECK reads it
    os.execv(command[0], command)


def health(name: str | None = None) -> int:
    """0 when the running process answers: ``/healthz`` (http) or ``/metrics`` (the others)."""
    import os
    from urllib.request import urlopen

    if name is None:
        try:
            with open(RUNNING_FILE, encoding="utf-8") as handle:
                name = handle.read().strip()
        except OSError:
            return 1
    process = BY_NAME[name]
    if process.kind == JOB:
        return 0
    port = int(os.environ.get("PORT") or process.port or 0) if process.kind == HTTP \
        else int(os.environ.get("METRICS_PORT") or process.metrics_port or 0)
    path = "/healthz" if process.kind == HTTP else "/metrics"
    try:
        with urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            return 0 if response.status == 200 else 1
    except OSError:
        return 1


def main() -> None:
    """``python -m deploy.processes``: print the table (what an operator must run);
    ``… run NAME [ARGS]``: become that process; ``… health [NAME]``: probe it."""
    if len(sys.argv) > 2 and sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3:])
    if len(sys.argv) > 1 and sys.argv[1] == "health":
        sys.exit(health(sys.argv[2] if len(sys.argv) > 2 else None))
    width = max(len(p.name) for p in PROCESSES)
    for p in PROCESSES:
        where = f":{p.scrape_port}" if p.scrape_port else ""
        count = "once" if p.kind == JOB else ("1" if p.singleton else f"{p.replicas}+")
        print(f"{p.name:<{width}}  {p.kind:<10} {count:<4} {where:<6} {' '.join(p.command())}")


if __name__ == "__main__":
    main()
