"""Flask plumbing every service app shares: request ids (in every log line), the
internal service token, access-token verification (flask-jwt-extended, shared.tokens),
JSON body loading, health routes and the error envelope."""
from __future__ import annotations

import json
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Mapping, TextIO

import orjson
from flask import Flask, Response, after_this_request, g, jsonify, request
from flask.json.provider import DefaultJSONProvider
from marshmallow import Schema, ValidationError, fields
from werkzeug import routing

from shared.config import Settings
from shared.db import MAX_ID
from shared.errors import BadRequest, Forbidden, error_response, register_error_handlers
from shared.metrics import init_flask_metrics
from shared.secret_compare import same_secret
from shared.tokens import init_jwt

SERVICE_TOKEN_HEADER = "X-Service-Token"
REQUEST_ID_HEADER = "X-Request-ID"
# A caller's request id is kept only if it is short and plain, so it cannot forge log lines.
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# gunicorn's access log line, ending with the request id the app echoed in its response.
# Paths an internal service answers without the service token.
OPEN_PATHS = ("/healthz", "/readyz", "/metrics")
ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s" [%({x-request-id}o)s]'

log = logging.getLogger(__name__)


class IdConverter(routing.BaseConverter):
    """``<id:name>`` in a route: a row id, 1 to 2⁶³−1. Any other text matches no route (404),
    so an id no 64-bit column can hold never reaches the database driver."""

    regex = r"[1-9][0-9]{0,18}"
    part_isolating = True

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > MAX_ID:
            raise routing.ValidationError()
        return number

    def to_url(self, value: Any) -> str:
        return str(int(value))


# JSON nested deeper than this is refused before it is parsed (Python's parser would recurse
# until RecursionError); no request of the platform nests beyond a handful of levels.
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


class JsonTooDeep(ValueError):
    pass


def json_too_deep(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``text`` nests arrays or objects more than ``limit`` deep (not parsing it)."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for bracket in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if bracket.group() in "[{" else -1
        if depth > limit:
            return True
    return False


def after_response(callback: Callable[[], None]) -> None:
    """Run ``callback`` once the current response has been sent, outside the request: work
    whose duration must not show in the answer (or delay it). A failure is logged."""
    def run() -> None:
        try:
            callback()
        except Exception:  # the client has its answer; nobody else would see the error
            log.exception("work after the response failed")

    @after_this_request
    def _schedule(response: Response) -> Response:
        response.call_on_close(run)
        return response


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON with orjson: several times faster on the listings every page shows.
    Keys keep their order; what orjson cannot write (Decimal, …) goes through Flask's own
    ``default``, and what it refuses outright (an integer beyond 64 bits, echoed back in a
    validation error) through the standard library."""

    OPTIONS = orjson.OPT_NON_STR_KEYS

    def _encode(self, obj: Any) -> bytes:
        try:
            return orjson.dumps(obj, default=self.default, option=self.OPTIONS)
        except TypeError:
            return json.dumps(obj, default=self.default, separators=(",", ":")).encode()

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return self._encode(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        if json_too_deep(s):  # refused as malformed JSON (400) before parsing
            raise JsonTooDeep(f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
        return orjson.loads(s)

    def response(self, *args: Any, **kwargs: Any):
        return self._app.response_class(self._encode(self._prepare_response_obj(args, kwargs)),
                                        mimetype=self.mimetype)


def load_json(schema: Schema) -> Any:
    """Parse the request body as JSON and validate it with ``schema`` (422 on bad fields)."""
    payload = request.get_json(silent=True)
    if payload is None:
        raise BadRequest("The request body must be JSON.", code="INVALID_JSON")
    return schema.load(payload)


def load_query(schema: Schema) -> Any:
    return schema.load(request.args.to_dict())


class CommaSeparated(fields.Field):
    """A query parameter holding a comma-separated list (``?ids=a,b,c``): each item is loaded
    with ``item``; duplicates are dropped, order kept; 1 to ``max_items`` of them (else 422)."""

    def __init__(self, item: fields.Field, max_items: int = 100, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.item = item
        self.max_items = max_items

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any]:
        if not isinstance(value, str):
            raise ValidationError("Not a comma-separated list.")
        parts = [part.strip() for part in value.split(",") if part.strip()]
        if not parts:
            raise ValidationError("Give at least one item.")
        if len(parts) > self.max_items:
            raise ValidationError(f"At most {self.max_items} items.")
        return list(dict.fromkeys(self.item.deserialize(part) for part in parts))


def request_id() -> str:
    return getattr(g, "request_id", "-")


def request_received_at() -> float:
    """When the platform received the current request (Unix seconds): when this app began
    it, or earlier, as a trusted proxy in front of the gateway stamped it (X-Request-Start)."""
    return g.get("request_received_at") or time.time()


# The render job a thread is working on, for its log lines (``job_context``).
_current_job: ContextVar[str | None] = ContextVar("current_job", default=None)
# The id of a request answered outside Flask (``services/gateway/fast_path.py``), for its log lines.
_outside_request: ContextVar[str] = ContextVar("outside_request", default="-")


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Log lines written inside carry ``job_id`` (``jobId`` in JSON logs)."""
    token = _current_job.set(job_id)
    try:
        yield
    finally:
        _current_job.reset(token)


@contextmanager
def request_id_context(request_id_: str) -> Iterator[None]:
    """Log lines written inside, outside any Flask request, carry ``request_id_``."""
    token = _outside_request.set(request_id_)
    try:
        yield
    finally:
        _outside_request.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds the current request id (or '-') and render job id (or None) to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            record.request_id = request_id()
        except RuntimeError:  # outside a Flask request
            record.request_id = _outside_request.get()
        record.job_id = _current_job.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line (``LOG_FORMAT=json``): for a log collector to index."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "service": self.service, "logger": record.name,
            "message": record.getMessage()}
        request = getattr(record, "request_id", "-")
        if request != "-":
            line["requestId"] = request
        if getattr(record, "job_id", None):
            line["jobId"] = record.job_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def log_handler(service: str, stream: TextIO | None = None, log_format: str | None = None) -> logging.Handler:
    """A handler whose lines carry the service name, the request id and the job id: text, or
    JSON with ``LOG_FORMAT=json``."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    if (log_format or os.environ.get("LOG_FORMAT", "text")) == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s {service} %(levelname)s [%(request_id)s] %(name)s: %(message)s"))
    return handler


def configure_logging(service: str, level: str) -> None:
    root = logging.getLogger()
    root.handlers[:] = [log_handler(service)]
    root.setLevel(level)


def new_request_id() -> str:
    """32 random hex digits (as ``uuid4().hex`` reads, without building a UUID)."""
    return os.urandom(16).hex()


def wsgi_request_id(wsgi_env: dict) -> str:
    """``incoming_request_id`` for a WSGI layer in front of Flask."""
    presented = wsgi_env.get("HTTP_X_REQUEST_ID", "")
    return presented if VALID_REQUEST_ID.fullmatch(presented) else new_request_id()


def incoming_request_id() -> str:
    """The caller's ``X-Request-ID`` if it is well-formed, else a new one."""
    presented = request.headers.get(REQUEST_ID_HEADER, "")
    return presented if VALID_REQUEST_ID.fullmatch(presented) else new_request_id()


def run_probes(checks: Mapping[str, Callable[[], Any]]) -> dict[str, Any]:
    """Run the probes concurrently (a hung dependency costs its own timeout, not the sum of
    all); name → what the probe returned, or the exception it raised."""
    def outcome(check: Callable[[], Any]) -> Any:
        try:
            return check()
        except Exception as exc:  # a probe reports, it does not raise
            return exc

    if len(checks) <= 1:
        return {name: outcome(check) for name, check in checks.items()}
    with ThreadPoolExecutor(max_workers=len(checks)) as pool:
        futures = {name: pool.submit(outcome, check) for name, check in checks.items()}
        return {name: future.result() for name, future in futures.items()}


def init_service_app(app: Flask, settings: Settings, *, internal: bool,
                     ready_checks: dict[str, Callable[[], None]] | None = None,
                     ready_info: dict[str, Callable[[], Any]] | None = None) -> None:
    """Bind the shared behaviour to a service app.

    ``internal`` services answer only calls that carry the service token (the gateway
    and the worker add it); ``/healthz`` and ``/readyz`` stay open for probes, ``/metrics`` for
    Prometheus (``METRICS_TOKEN`` guards it, ``shared/metrics.py``).
    ``/readyz`` fails (503) when a ``ready_checks`` probe raises; ``ready_info`` probes
    are only reported. Access tokens are verified by flask-jwt-extended (``shared.tokens``).
    Outside tests, log lines go to stderr with the request id (under pytest, its own log
    capture stays in place).
    """
    app.config["SETTINGS"] = settings
    app.json = OrjsonProvider(app)
    app.url_map.converters["id"] = IdConverter
    register_error_handlers(app)
    init_jwt(app, settings)
    service = app.import_name.split(".")[-2] if "." in app.import_name else app.import_name
    if settings.env != "test":
        configure_logging(service, settings.log_level)
    init_flask_metrics(app, service)  # first, so every request is timed and counted, refused ones too

    @app.before_request
    def _identify_request():
        g.request_id = incoming_request_id()
        g.request_received_at = time.time()
        if internal and request.path not in OPEN_PATHS:
            presented = request.headers.get(SERVICE_TOKEN_HEADER, "")
            if not same_secret(presented, settings.service_token):
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
        required = ready_checks or {}
        outcomes = run_probes({**required, **(ready_info or {})})
        components: dict[str, Any] = {}
        for name, outcome in outcomes.items():
            if isinstance(outcome, Exception):
                components[name] = f"down: {outcome.__class__.__name__}"
            else:
                components[name] = "ok" if name in required else outcome
        if any(isinstance(outcomes[name], Exception) for name in required):
            return error_response(503, "NOT_READY", "A required dependency is unreachable.", components)
        return jsonify({"success": True, "data": {"status": "ready", "components": components}})
