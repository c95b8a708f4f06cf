"""Dependency probes: the strict ``/readyz`` checks and the informational ``/api/health``.

``/readyz`` fails (503) when any dependency is not ready, including a service whose own
``/readyz`` fails because Redis is down. ``/api/health`` tells each component's own state:
a service that answers and whose database answers is "ok" even while Redis is down (Redis
is reported as itself). Its ``status``: "down" while Redis is down (no signed-in request can
be served: revocations cannot be checked), "degraded" while another component is down or
no render worker is live, else "ok". It answers 200 either way: it is for the web client;
orchestrators probe ``/readyz``.
"""
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


def _service_state(session: requests.Session, base_url: str) -> str:
    """"ok" if the service answers and everything its ``/readyz`` checks but Redis is ready."""
    try:
        response = session.get(f"{base_url.rstrip('/')}/readyz", timeout=PROBE_TIMEOUT)
        body = response.json()
    except (requests.RequestException, ValueError):
        return "down"
    if response.status_code == 200:
        return "ok"
    details = (body.get("error") or {}).get("details") if isinstance(body, dict) else None
    if response.status_code == 503 and isinstance(details, dict) and details:
        own = [state for name, state in details.items() if name != "redis"]
        return "ok" if all(state == "ok" for state in own) else "down"
    return "down"


def component_states(settings: Settings, session: requests.Session, redis_client: redis.Redis,
                     render: RenderService) -> dict[str, Callable[[], str]]:
    """Each component's own state for ``/api/health`` ("ok"; "down" or an exception otherwise)."""
    def answers(ping: Callable[[], object]) -> Callable[[], str]:
        def state() -> str:
            ping()  # raises when the dependency does not answer
            return "ok"
        return state

    return {
        "auth": lambda: _service_state(session, settings.auth_url),
        "credits": lambda: _service_state(session, settings.credits_url),
        "gallery": lambda: _service_state(session, settings.gallery_url),
        "redis": answers(redis_client.ping),
        "renderDatabase": answers(render.db.ping),
    }


def informational_checks(render: RenderService) -> dict[str, Callable[[], object]]:
    """Reported by ``/readyz`` but never failing it: jobs wait in the queue until a worker starts."""
    return {"renderWorkers": lambda: len(render.live_catalogs())}


@bp.get("/api/health")
@doc("The platform's state for the web client: ok, degraded or down; each component, live render workers, "
     "demo notice")
def health():
    states: dict[str, Callable[[], str]] = current_app.extensions["gateway_component_states"]
    config: GatewayConfig = current_app.extensions["gateway_config"]
    outcomes = run_probes({**states, **informational_checks(current_app.extensions["render"])})
    components: dict[str, object] = {name: "ok" if outcomes[name] == "ok" else "down" for name in states}
    workers = outcomes["renderWorkers"]
    components["renderWorkers"] = 0 if isinstance(workers, Exception) else workers
    if components["redis"] != "ok":
        status = "down"
    elif any(components[name] != "ok" for name in states) or not components["renderWorkers"]:
        status = "degraded"
    else:
        status = "ok"
    return ok({
        "status": status,
        "demoBackend": config.demo_backend,
        "notice": DEMO_NOTICE if config.demo_backend else None,
        "components": components,
    })
