"""The movement routes every render job calls (hold, capture, release, settle), and the
signed-in balance read every page shows, answered in front of Flask.

A job costs credits two internal requests (hold at admission, settle at the end), and for
such a request Flask's machinery (request context, routing, the shared hooks, werkzeug's
request and response objects) cost about as much CPU as the movement's own code. This WSGI
middleware does for those four routes exactly what the shared hooks and handlers do
(``shared.web.init_service_app``, ``shared.errors``, ``shared.metrics``): the request id
(kept if well-formed, echoed, in every log line), the service token (403
SERVICE_TOKEN_REQUIRED), the JSON body (400 INVALID_JSON, also when nested too deep), the
route's schema (422 VALIDATION_ERROR with marshmallow's messages), the domain's errors in the
envelope with their status, a lost database connection (503 DATABASE_RECONNECTED), anything
else (500 INTERNAL_ERROR, logged), and the request metrics under the route's rule. The
route's own work is the function its Flask view calls (``services.credits.api``).

Anything else goes to Flask unchanged: other paths and methods, a body that is not plainly
``Content-Type: application/json`` with a ``Content-Length``. A new hook of
``init_service_app`` that must also apply to these routes belongs here too.

``BalanceFastPath`` answers ``GET /api/users/credits`` (``api.my_balance``) only for the
case that has nothing to refuse: the service token, a bearer token this app has verified
before (``shared.tokens.VerifiedTokens``, whose expiry check still runs), one that is not an
API token's or carries ``credits:read``, and a revocation check (the same MGET) that Redis
answered with "not revoked". Every other request, refusals and a Redis error included, goes
to Flask unchanged, which answers it (and checks again) exactly as before.
"""
from __future__ import annotations

import logging
import re
import time
from typing import Any, Callable, Iterable, NamedTuple

import orjson
import redis
from marshmallow import Schema, ValidationError
from sqlalchemy.exc import DBAPIError
from werkzeug.http import HTTP_STATUS_CODES

from shared.db import is_disconnect
from shared.errors import Forbidden, ServiceError, ServiceUnavailable
from shared.metrics import RequestMetrics
from shared.secret_compare import same_secret
from shared.tokens import VerifiedTokens, is_revoked
from shared.web import REQUEST_ID_HEADER, json_too_deep, request_id_context, wsgi_request_id
from services.credits import api
from services.credits.service import CreditsService

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]
HOLDS = "/internal/holds"
ON_A_HOLD = re.compile(r"/internal/holds/([^/]+)/(capture|release|settle)")
BALANCE = "/api/users/credits"
JSON_OPTIONS = orjson.OPT_NON_STR_KEYS


class Route(NamedTuple):
    rule: str  # as Flask names it, for the metrics' label
    schema: Schema
    movement: Callable[[CreditsService, Any, dict], tuple[dict, int]]


ROUTES = {
    "hold": Route(HOLDS, api.HOLD_INPUT, api.hold_movement),
    "capture": Route(f"{HOLDS}/<job_id>/capture", api.CAPTURE_INPUT, api.capture_movement),
    "release": Route(f"{HOLDS}/<job_id>/release", api.RELEASE_INPUT, api.release_movement),
    "settle": Route(f"{HOLDS}/<job_id>/settle", api.SETTLE_INPUT, api.settle_movement),
}


def _envelope_error(status: int, code: str, message: str, details: Any = None) -> tuple[int, bytes]:
    return status, orjson.dumps({"success": False, "error": {"code": code, "message": message, "details": details}},
                                option=JSON_OPTIONS)


def _error_answer(exc: Exception) -> tuple[int, bytes]:
    """What ``shared.errors``' handlers answer for ``exc``."""
    if isinstance(exc, ServiceError):
        return _envelope_error(exc.status, exc.code, exc.message, exc.details)
    if isinstance(exc, ValidationError):
        return _envelope_error(422, "VALIDATION_ERROR", "Some fields are invalid.", exc.messages)
    if isinstance(exc, DBAPIError) and is_disconnect(exc):
        log.warning("the database connection was lost; the pool reconnects")
        return _envelope_error(503, "DATABASE_RECONNECTED", "The database connection was renewed; try again.")
    log.exception("database error" if isinstance(exc, DBAPIError) else "unhandled error")
    return _envelope_error(500, "INTERNAL_ERROR", "Something went wrong on our side.")


def _respond(start_response: Callable, status: int, body: bytes, request_id: str) -> list[bytes]:
    start_response(f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}",
                   [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                    (REQUEST_ID_HEADER, request_id)])
    return [body]


def _plain_json(wsgi_env: dict) -> bool:
    """A body Flask would read as JSON without help: ``application/json`` with a length."""
    return (wsgi_env.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower() == "application/json"
            and wsgi_env.get("CONTENT_LENGTH", "").isdigit() and "HTTP_TRANSFER_ENCODING" not in wsgi_env)


class MovementsFastPath:
    def __init__(self, app: WsgiApp, credits: CreditsService, service_token: str, service: str = "credits") -> None:
        self.app = app
        self.credits = credits
        self.service_token = service_token
        self.metrics = RequestMetrics(service)

    def __call__(self, wsgi_env: dict, start_response: Callable) -> Iterable[bytes]:
        if wsgi_env["REQUEST_METHOD"] != "POST":
            return self.app(wsgi_env, start_response)
        path = wsgi_env.get("PATH_INFO", "")
        if path == HOLDS:
            route, job_id = ROUTES["hold"], None
        else:
            match = ON_A_HOLD.fullmatch(path)
            if match is None or not path.isascii():
                return self.app(wsgi_env, start_response)
            route, job_id = ROUTES[match.group(2)], match.group(1)
        if not _plain_json(wsgi_env):
            return self.app(wsgi_env, start_response)

        started = time.perf_counter()
        request_id = wsgi_request_id(wsgi_env)
        with request_id_context(request_id):
            try:
                status, body = self._answer(wsgi_env, route, job_id)
            except Exception as exc:  # the error handlers' part
                status, body = _error_answer(exc)
        self.metrics.observe("POST", route.rule, status, started)
        return _respond(start_response, status, body, request_id)

    def _answer(self, wsgi_env: dict, route: Route, job_id: str | None) -> tuple[int, bytes]:
        if not same_secret(wsgi_env.get("HTTP_X_SERVICE_TOKEN", ""), self.service_token):
            raise Forbidden("This service accepts calls from the platform only.", code="SERVICE_TOKEN_REQUIRED")
        raw = wsgi_env["wsgi.input"].read(int(wsgi_env["CONTENT_LENGTH"]))
        try:
            payload = None if json_too_deep(raw) else orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = None
        if payload is None:
            return _envelope_error(400, "INVALID_JSON", "The request body must be JSON.")
        data, status = route.movement(self.credits, job_id, route.schema.load(payload))
        return status, orjson.dumps({"success": True, "data": data}, option=JSON_OPTIONS)


class BalanceFastPath:
    def __init__(self, app: WsgiApp, credits: CreditsService, service_token: str, verified: VerifiedTokens,
                 client: redis.Redis, service: str = "credits") -> None:
        self.app = app
        self.credits = credits
        self.service_token = service_token
        self.verified = verified
        self.redis = client
        self.metrics = RequestMetrics(service)

    def __call__(self, wsgi_env: dict, start_response: Callable) -> Iterable[bytes]:
        if wsgi_env["REQUEST_METHOD"] != "GET" or wsgi_env.get("PATH_INFO") != BALANCE:
            return self.app(wsgi_env, start_response)
        started = time.perf_counter()
        user_id = self._unrefused_user(wsgi_env)
        if user_id is None:
            return self.app(wsgi_env, start_response)
        request_id = wsgi_request_id(wsgi_env)
        with request_id_context(request_id):
            try:
                status, body = 200, orjson.dumps({"success": True, "data": self.credits.balance(user_id).to_dict()},
                                                 option=JSON_OPTIONS)
            except Exception as exc:  # the error handlers' part
                status, body = _error_answer(exc)
        self.metrics.observe("GET", BALANCE, status, started)
        return _respond(start_response, status, body, request_id)

    def _unrefused_user(self, wsgi_env: dict) -> int | None:
        """The caller's user id when Flask would let the request through to ``my_balance``
        with a remembered token (as ``shared.tokens._verified_caller`` reads the header); None
        for anything else, Flask's to answer."""
        if not same_secret(wsgi_env.get("HTTP_X_SERVICE_TOKEN", ""), self.service_token):
            return None
        claims = self.verified.of_header(wsgi_env.get("HTTP_AUTHORIZATION", ""))
        if claims is None or not claims.may(api.READ_SCOPE):
            return None
        try:
            revoked = is_revoked(self.redis, claims)
        except ServiceUnavailable:  # Redis did not answer: Flask asks again and fails closed (503)
            return None
        return None if revoked else claims.user_id
