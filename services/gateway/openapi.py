"""The public API description: the gateway's own ``/api`` routes merged with those of auth,
credits, gallery, integrations and safety, at ``GET /api/openapi.json``, and a page to browse it at ``GET /api/docs``.

Each service publishes its own spec at ``/openapi.json`` (behind the service token); the
gateway fetches them, keeps only the public ``/api`` paths, prefixes their component
schemas with the service name (``gallery.SaveWork``) so names never clash, and drops what
the gateway itself supplies (the service token). The merged spec is cached for
``CACHE_SECONDS``; a service that does not answer is left out, with a note in
``info.description``, and asked again when the cache expires.
"""
from __future__ import annotations

import copy
import threading
import time
from typing import Any, Callable

import requests
from flask import Blueprint, Response, current_app, jsonify, send_from_directory
from flask.blueprints import BlueprintSetupState

from shared.config import Settings
from shared.openapi import API_VERSION, BEARER, SERVICE_TOKEN, SERVICE_TOKEN_REQUIRED, build_spec, doc, error_response
from shared.web import SERVICE_TOKEN_HEADER, run_probes

CACHE_SECONDS = 30.0
FETCH_TIMEOUT = (1.0, 3.0)
TITLE = "AIGC platform API"
SCHEMA_REF = "#/components/schemas/"
SHARED_SCHEMAS = frozenset({"Error"})  # built by shared.openapi, the same in every service
DESCRIPTION = (
    "The public HTTP API, all behind this gateway. Send the access token as `Authorization: Bearer <token>`, "
    "or an API token (`/api/tokens`) as `Authorization: Bearer pat_…` on the routes of its scopes. "
    "Signed webhooks: `/api/webhooks`. Internal services can also render over the message queue (docs/queue-api.md). "
    "Every answer is the envelope `{success, data}` or `{success: false, error: {code, message, details}}`. "
    "Live job events: WebSocket `/ws?token=<access token>`; a job's final event (`job.succeeded`, `job.failed`, "
    "`job.cancelled`) comes at least once: dedupe on its `eventId` (`<type>:<jobId>`). Files: `/media/<key>`."
)

bp = Blueprint("openapi", __name__, static_folder="docs", static_url_path="/api/docs/assets")


def _is_public_route(path: str, endpoint: str) -> bool:
    """The gateway's own API routes; proxied paths come from the services' own specs."""
    return path.startswith("/api/") and not endpoint.startswith("proxy.")


class ServiceSpecs:
    """Fetches each internal service's spec with the service token, concurrently."""

    def __init__(self, urls: dict[str, str], service_token: str) -> None:
        self.urls = {name: url.rstrip("/") for name, url in urls.items()}
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers[SERVICE_TOKEN_HEADER] = service_token

    def _fetch(self, url: str) -> Callable[[], dict[str, Any]]:
        def fetch() -> dict[str, Any]:
            response = self.session.get(f"{url}/openapi.json", timeout=FETCH_TIMEOUT)
            response.raise_for_status()
            spec = response.json()
            if not isinstance(spec, dict) or not isinstance(spec.get("paths"), dict):
                raise ValueError("not an OpenAPI document")
            return spec
        return fetch

    def fetch_all(self) -> dict[str, dict[str, Any] | Exception]:
        return run_probes({name: self._fetch(url) for name, url in self.urls.items()})

    def close(self) -> None:
        self.session.close()


class PublicSpec:
    """The merged spec, rebuilt at most once per ``ttl`` seconds."""

    def __init__(self, services: ServiceSpecs, ttl: float = CACHE_SECONDS) -> None:
        self.services = services
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None  # (built at, spec)

    def get(self, own: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        with self._lock:
            if self._cached is None or self._cached[0] + self.ttl <= time.monotonic():
                self._cached = (time.monotonic(), merge(own(), self.services.fetch_all()))
            return self._cached[1]


def merge(own: dict[str, Any], services: dict[str, dict[str, Any] | Exception]) -> dict[str, Any]:
    """The gateway's spec plus the public paths of every service that answered."""
    merged = copy.deepcopy(own)
    paths, schemas = merged["paths"], merged.setdefault("components", {}).setdefault("schemas", {})
    missing = []
    for name, spec in services.items():
        if isinstance(spec, Exception):
            missing.append(f"{name} ({spec.__class__.__name__})")
            continue
        service_paths, service_schemas = public_part(name, spec)
        for path, item in service_paths.items():
            paths.setdefault(path, {}).update(item)
        schemas.update(service_schemas)
    merged["paths"] = dict(sorted(paths.items()))
    merged["components"]["securitySchemes"] = {BEARER: own["components"]["securitySchemes"][BEARER]}
    merged["tags"] = [{"name": name} for name in sorted({tag for item in paths.values() for op in item.values()
                                                         if isinstance(op, dict) for tag in op.get("tags", [])})]
    description = DESCRIPTION
    if missing:
        description += (f"\n\nNot included right now (the service did not answer): {', '.join(missing)}. "
                        f"Asked again within {CACHE_SECONDS:g} s.")
    merged["info"]["description"] = description
    return merged


def public_part(service: str, spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A service's ``/api`` paths as the gateway exposes them, and its schemas, renamed."""
    spec = _renamed(copy.deepcopy(spec), service)
    paths = {}
    for path, item in spec["paths"].items():
        if not path.startswith("/api/"):
            continue  # /internal/*, /openapi.json, /healthz and /readyz are not reachable through the gateway
        for method, operation in item.items():
            if method != "parameters":
                _as_proxied(operation)
        paths[path] = item
    schemas = {_schema_name(service, name): schema
               for name, schema in spec.get("components", {}).get("schemas", {}).items() if name not in SHARED_SCHEMAS}
    return paths, schemas


def _schema_name(service: str, name: str) -> str:
    return name if name in SHARED_SCHEMAS else f"{service}.{name}"


def _renamed(node: Any, service: str) -> Any:
    """Point every schema reference at the prefixed name."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(SCHEMA_REF):
            node["$ref"] = SCHEMA_REF + _schema_name(service, ref[len(SCHEMA_REF):])
        for value in node.values():
            _renamed(value, service)
    elif isinstance(node, list):
        for value in node:
            _renamed(value, service)
    return node


# Error codes the edge removes (the gateway adds the service token) and adds to every proxied route.
EDGE_ERRORS = {403: ([SERVICE_TOKEN_REQUIRED], []), 429: ([], ["RATE_LIMITED"]), 503: ([], ["SERVICE_UNAVAILABLE"])}


def _as_proxied(operation: dict[str, Any]) -> None:
    """What the caller sees through the gateway: no service token, plus the edge's own answers."""
    requirements = []
    for requirement in operation.get("security", []):
        kept = {name: scopes for name, scopes in requirement.items() if name != SERVICE_TOKEN}
        if kept not in requirements:
            requirements.append(kept)
    operation["security"] = requirements
    responses = operation.setdefault("responses", {})
    for status, (removed, added) in EDGE_ERRORS.items():
        current = responses.get(str(status), {}).get("x-error-codes", [])
        listed = [code for code in current if code not in removed] + [code for code in added if code not in current]
        if listed:
            responses[str(status)] = error_response(status, listed)
        elif current:
            del responses[str(status)]
    operation["responses"] = dict(sorted(responses.items()))


@bp.record_once
def _setup(state: BlueprintSetupState) -> None:
    settings: Settings = state.app.config["SETTINGS"]
    services = ServiceSpecs({"auth": settings.auth_url, "credits": settings.credits_url,
                             "gallery": settings.gallery_url, "integrations": settings.integrations_url,
                             "safety": settings.safety_url},
                            settings.service_token)
    state.app.extensions["gateway_openapi"] = PublicSpec(services)


def _own_spec() -> dict[str, Any]:
    """The gateway's own routes (built once: they do not change while the app runs)."""
    spec = current_app.extensions.get("gateway_openapi_own")
    if spec is None:
        spec = build_spec(current_app, TITLE, API_VERSION, include=_is_public_route)
        current_app.extensions["gateway_openapi_own"] = spec
    return spec


@bp.get("/api/openapi.json")
@doc("The OpenAPI description of the whole public API")
def openapi_spec() -> Response:
    response = jsonify(current_app.extensions["gateway_openapi"].get(_own_spec))
    response.headers["Cache-Control"] = f"public, max-age={CACHE_SECONDS:g}"
    return response


@bp.get("/api/docs")
@doc("A page to browse the API description", content_type="text/html")
def docs_page() -> Response:
    response = send_from_directory(bp.static_folder, "index.html")
    response.headers["Cache-Control"] = "no-cache"
    return response
