"""Dependency probes: the strict ``/readyz`` checks and the informational ``/api/health``."""
from __future__ import annotations

from typing import Callable

import redis
import requests
from flask import Blueprint, current_app

from services.render_worker.catalog import read_live_catalogs
from shared.config import Settings
from shared.errors import ok

PROBE_TIMEOUT = (1.0, 2.0)
DEMO_NOTICE = "Demo backend: images come from the built-in ComfyUI emulator, not a real model."

bp = Blueprint("health", __name__)


def _service_probe(session: requests.Session, base_url: str) -> Callable[[], None]:
    def probe() -> None:
        response = session.get(f"{base_url.rstrip('/')}/readyz", timeout=PROBE_TIMEOUT)
        response.raise_for_status()
    return probe


def dependency_checks(settings: Settings, session: requests.Session,
                      redis_client: redis.Redis) -> dict[str, Callable[[], None]]:
    """One probe per dependency; each raises when its dependency is not ready."""
    return {
        "auth": _service_probe(session, settings.auth_url),
        "credits": _service_probe(session, settings.credits_url),
        "gallery": _service_probe(session, settings.gallery_url),
        "redis": redis_client.ping,
    }


@bp.get("/api/health")
def health():
    settings: Settings = current_app.config["SETTINGS"]
    checks: dict[str, Callable[[], None]] = current_app.extensions["gateway_checks"]
    components: dict[str, object] = {}
    for name, check in checks.items():
        try:
            check()
            components[name] = "ok"
        except Exception:  # a probe reports, it does not raise
            components[name] = "down"
    try:
        components["renderWorkers"] = len(read_live_catalogs(current_app.extensions["gateway_redis"]))
    except redis.RedisError:
        components["renderWorkers"] = 0
    healthy = all(value == "ok" for name, value in components.items() if name != "renderWorkers")
    healthy = healthy and components["renderWorkers"] > 0
    return ok({
        "status": "ok" if healthy else "degraded",
        "demoBackend": settings.demo_backend,
        "notice": DEMO_NOTICE if settings.demo_backend else None,
        "components": components,
    })
