"""Dependency probes: the strict ``/readyz`` checks and the informational ``/api/health``."""
from __future__ import annotations

from typing import Callable

import redis
import requests
from flask import Blueprint, current_app

from services.gateway.config import GatewayConfig
from services.render.service import RenderService
from shared.config import Settings
from shared.errors import ok
from shared.openapi import doc
from shared.web import run_probes

PROBE_TIMEOUT = (1.0, 2.0)
DEMO_NOTICE = "Demo backend: images come from the built-in ComfyUI emulator, not a real model."

bp = Blueprint("health", __name__)


def probe_session() -> requests.Session:
    """A small keep-alive session for the probes, ignoring any proxy set in the environment."""
    session = requests.Session()
    session.trust_env = False
    return session


def _service_probe(session: requests.Session, base_url: str) -> Callable[[], None]:
    def probe() -> None:
        response = session.get(f"{base_url.rstrip('/')}/readyz", timeout=PROBE_TIMEOUT)
        response.raise_for_status()
    return probe


def dependency_checks(settings: Settings, session: requests.Session, redis_client: redis.Redis,
                      render: RenderService) -> dict[str, Callable[[], None]]:
    """One probe per required dependency; each raises when its dependency is not ready.

    Each downstream service's own ``/readyz`` covers its database and Redis.
    """
    return {
        "auth": _service_probe(session, settings.auth_url),
        "credits": _service_probe(session, settings.credits_url),
        "gallery": _service_probe(session, settings.gallery_url),
        "redis": redis_client.ping,
        "renderDatabase": render.db.ping,
    }


def informational_checks(render: RenderService) -> dict[str, Callable[[], object]]:
    """Reported by ``/readyz`` but never failing it: jobs wait in the queue until a worker starts."""
    return {"renderWorkers": lambda: len(render.live_catalogs())}


@bp.get("/api/health")
@doc("The platform's state for the web client: each component, live render workers, demo notice")
def health():
    checks: dict[str, Callable[[], None]] = current_app.extensions["gateway_checks"]
    config: GatewayConfig = current_app.extensions["gateway_config"]
    outcomes = run_probes({**checks, **informational_checks(current_app.extensions["render"])})
    components: dict[str, object] = {name: "down" if isinstance(outcomes[name], Exception) else "ok"
                                     for name in checks}
    workers = outcomes["renderWorkers"]
    components["renderWorkers"] = 0 if isinstance(workers, Exception) else workers
    healthy = all(value == "ok" for name, value in components.items() if name != "renderWorkers")
    healthy = healthy and components["renderWorkers"] > 0
    return ok({
        "status": "ok" if healthy else "degraded",
        "demoBackend": config.demo_backend,
        "notice": DEMO_NOTICE if config.demo_backend else None,
        "components": components,
    })
