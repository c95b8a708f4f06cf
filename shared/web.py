"""Flask plumbing every service app shares: request ids, the internal service
token, JSON body loading, health routes and the error envelope."""
from __future__ import annotations

import hmac
import logging
import uuid
from typing import Any, Callable

from flask import Flask, g, jsonify, request
from marshmallow import Schema

from shared.config import Settings
from shared.errors import BadRequest, Forbidden, error_response, register_error_handlers

SERVICE_TOKEN_HEADER = "X-Service-Token"
REQUEST_ID_HEADER = "X-Request-ID"

log = logging.getLogger(__name__)


def load_json(schema: Schema) -> Any:
    """Parse the request body as JSON and validate it with ``schema`` (422 on bad fields)."""
    payload = request.get_json(silent=True)
    if payload is None:
        raise BadRequest("The request body must be JSON.", code="INVALID_JSON")
    return schema.load(payload)


def load_query(schema: Schema) -> Any:
    return schema.load(request.args.to_dict())


def request_id() -> str:
    return getattr(g, "request_id", "-")


class RequestIdFilter(logging.Filter):
    """Adds the current request id (or '-') to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            record.request_id = request_id()
        except RuntimeError:
            record.request_id = "-"
        return True


def configure_logging(service: str, level: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s {service} %(levelname)s [%(request_id)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def init_service_app(app: Flask, settings: Settings, *, internal: bool,
                     ready_checks: dict[str, Callable[[], None]] | None = None) -> None:
    """Bind the shared behaviour to a service app.

    ``internal`` services answer only calls that carry the service token (the gateway
    and the worker add it); ``/healthz`` and ``/readyz`` stay open for probes.
    """
    app.config["SETTINGS"] = settings
    app.json.sort_keys = False
    register_error_handlers(app)

    @app.before_request
    def _identify_request():
        g.request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        if internal and request.path not in ("/healthz", "/readyz"):
            presented = request.headers.get(SERVICE_TOKEN_HEADER, "")
            if not hmac.compare_digest(presented, settings.service_token):
                raise Forbidden("This service accepts calls from the platform only.",
                                code="SERVICE_TOKEN_REQUIRED")

    @app.after_request
    def _echo_request_id(response):
        response.headers[REQUEST_ID_HEADER] = request_id()
        return response

    @app.get("/healthz")
    def healthz():
        return jsonify({"success": True, "data": {"status": "alive"}})

    @app.get("/readyz")
    def readyz():
        components, ready = {}, True
        for name, check in (ready_checks or {}).items():
            try:
                check()
                components[name] = "ok"
            except Exception as exc:  # a probe reports, it does not raise
                components[name] = f"down: {exc.__class__.__name__}"
                ready = False
        if not ready:
            return error_response(503, "NOT_READY", "A dependency is unreachable.", components)
        return jsonify({"success": True, "data": {"status": "ready", "components": components}})
