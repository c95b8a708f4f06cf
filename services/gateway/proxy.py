"""Reverse proxy from the public ``/api`` paths to the internal auth, credits, gallery,
integrations and safety services.

Only a fixed set of client headers is forwarded; the gateway adds the service token,
its request id and the client address. Small upstream bodies are read whole (the
connection goes straight back to the pool); large or unsized ones are streamed.

The hop itself is ``shared/http_transport.py``, a lean HTTP/1.1 client with keep-alive
pools, httptools parsing the answers (urllib3 over http.client cost most of a proxied
request's CPU). A connection closed before any answer is retried once for methods safe to
repeat. Plain GETs are answered in front of Flask (``services/gateway/fast_path.py``) with
the same ``Proxy.send``.
"""
from __future__ import annotations

import logging
from typing import Callable
from urllib.parse import quote, urlsplit

from flask import Blueprint, Flask, Response, current_app, request

from services.gateway.clientaddr import client_address
from services.gateway.config import GatewayConfig
from services.gateway.public_reads import PublicReads
from shared.http_transport import (Answer, ClosedEarly, ConnectTimedOut, Headers, Pool, ReadTimedOut,
                                        Unreachable, UpstreamError)
from shared.config import Settings
from shared.errors import BadRequest, ServiceUnavailable
from shared.web import REQUEST_ID_HEADER, SERVICE_TOKEN_HEADER, request_id

STREAM_CHUNK = 64 * 1024
# Bodies up to this size are buffered; beyond it (or without a length) they are streamed.
BUFFERED_BODY_LIMIT = 256 * 1024

# Public path prefix -> service. Werkzeug prefers the rule with more literal segments,
# so "/api/users/credits/..." reaches credits while the rest of "/api/users/..." reaches auth.
ROUTES: tuple[tuple[str, str], ...] = (
    ("/api/users/credits", "credits"),
    ("/api/admin/credits", "credits"),
    ("/api/credits", "credits"),
    ("/api/users", "auth"),
    ("/api/admin/users", "auth"),
    ("/api/auth", "auth"),
    ("/api/admin/auth", "auth"),
    ("/api/works", "gallery"),
    ("/api/notifications", "gallery"),
    ("/api/admin/works", "gallery"),
    ("/api/tokens", "auth"),
    ("/api/webhooks", "integrations"),
    ("/api/admin/service-accounts", "integrations"),
    ("/api/admin/queue-api", "integrations"),
    ("/api/admin/safety", "safety"),
)

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
# A dropped keep-alive connection is retried once, but only for methods safe to repeat.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})
FORWARDED_REQUEST_HEADERS = ("Authorization", "Content-Type", "Accept", "Accept-Language",
                             "User-Agent", "Idempotency-Key")
HOP_BY_HOP_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
# The gateway's own server writes these; passing the upstream's would duplicate them.
SERVER_OWNED_HEADERS = frozenset({"server", "date"})

log = logging.getLogger(__name__)

bp = Blueprint("proxy", __name__)


class Upstream:
    """One internal service: its keep-alive pool and path prefix."""

    def __init__(self, name: str, base_url: str, pool_size: int) -> None:
        url = urlsplit(base_url)
        self.name = name
        self.prefix = url.path.rstrip("/")
        tls = url.scheme == "https"
        self.pool = Pool(url.hostname or "127.0.0.1", url.port or (443 if tls else 80), pool_size, tls=tls)

    def close(self) -> None:
        self.pool.close()


class Proxy:
    """Forwards a request to one named upstream service."""

    def __init__(self, settings: Settings, config: GatewayConfig, pool_size: int) -> None:
        self.upstreams = {name: Upstream(name, url, pool_size) for name, url in (
            ("auth", settings.auth_url), ("credits", settings.credits_url), ("gallery", settings.gallery_url),
            ("integrations", settings.integrations_url), ("safety", settings.safety_url))}
        self.service_token = settings.service_token
        self.connect_timeout = config.connect_timeout
        self.read_timeout = config.read_timeout
        self.get_read_timeout = config.get_read_timeout

    def close(self) -> None:
        for upstream in self.upstreams.values():
            upstream.close()

    def request_headers(self, incoming: Callable[[str], str | None], client: str, request_id: str,
                        anonymous: bool = False) -> Headers:
        """What the service is sent: the forwarded client headers (``incoming(name)`` reads one),
        without Authorization when ``anonymous``, and the gateway's own."""
        headers = [(name, value) for name in FORWARDED_REQUEST_HEADERS
                   if (value := incoming(name)) and not (anonymous and name == "Authorization")]
        headers += ((SERVICE_TOKEN_HEADER, self.service_token), (REQUEST_ID_HEADER, request_id),
                    ("X-Forwarded-For", client), ("X-Real-IP", client))
        return headers

    def send(self, service: str, method: str, path: str, query: str, headers: Headers,
             body: bytes | None) -> Answer:
        """The service's answer (its head read); ServiceUnavailable (logged) when it gives none."""
        upstream = self.upstreams[service]
        target = upstream.prefix + quote(path) + ("?" + query if query else "")
        read_timeout = self.get_read_timeout if method == "GET" else self.read_timeout
        attempts = 2 if method in IDEMPOTENT_METHODS else 1
        for attempt in range(attempts):
            try:
                return upstream.pool.request(method, target, headers, body, self.connect_timeout, read_timeout)
            except ClosedEarly:
                if attempt + 1 < attempts:
                    continue  # a pooled connection the upstream had closed; one fresh try
                raise _unavailable(method, path, service, "closed the connection") from None
            except Unreachable as exc:
                raise _unavailable(method, path, service, "is unreachable") from exc
            except ConnectTimedOut as exc:
                raise _unavailable(method, path, service,
                                   f"did not accept a connection within {self.connect_timeout:g} s") from exc
            except ReadTimedOut as exc:
                raise _unavailable(method, path, service, f"did not answer within {read_timeout:g} s") from exc
            except UpstreamError as exc:
                raise _unavailable(method, path, service, "failed") from exc
            except ValueError as exc:
                raise BadRequest(f"The request cannot be passed on: {exc}.") from exc
        raise AssertionError("unreachable")

    def forward(self, service: str, anonymous: bool = False) -> Response:
        """The upstream's answer to the current request (``anonymous``: without its Authorization)."""
        headers = self.request_headers(request.headers.get, client_address(), request_id(), anonymous)
        answer = self.send(service, request.method, request.path, request.query_string.decode("latin-1"),
                           headers, request.get_data(cache=False) or None)
        passed = response_headers(answer.headers)
        if buffered(answer):
            return Response(read_whole(answer), status=answer.status, headers=passed)
        response = Response(answer.stream(STREAM_CHUNK), status=answer.status, headers=passed)
        response.call_on_close(answer.close)  # the client may have stopped reading: never pool a half-read connection
        return response


def _unavailable(method: str, path: str, service: str, what: str) -> ServiceUnavailable:
    log.warning("%s %s: the %s service %s", method, path, service, what)
    return ServiceUnavailable(f"The {service} service {what}; try again shortly.", details={"service": service})


def buffered(answer: Answer) -> bool:
    """Whether the answer's body is small enough to read whole before answering."""
    length = answer.header("Content-Length")
    return length is not None and length.isascii() and length.isdigit() and int(length) <= BUFFERED_BODY_LIMIT


def read_whole(answer: Answer) -> bytes:
    """The body of a ``buffered`` answer; the connection goes back to the pool."""
    try:
        return answer.read()
    except UpstreamError as exc:
        raise ServiceUnavailable("An internal service broke off its answer; try again shortly.") from exc


def response_headers(upstream_headers: Headers, dropped: frozenset[str] = frozenset()) -> Headers:
    """The service's headers the client is given: not hop-by-hop ones (nor those its
    ``Connection`` names), not those the gateway's server writes, not ``dropped`` (lower case)."""
    named_in_connection = {part.strip().lower() for name, value in upstream_headers
                           if name.lower() == "connection" for part in value.split(",") if part.strip()}
    dropped = HOP_BY_HOP_HEADERS | SERVER_OWNED_HEADERS | dropped | named_in_connection
    return [(name, value) for name, value in upstream_headers if name.lower() not in dropped]


def forward(service: str, rest: str = "") -> Response:
    proxy: Proxy = current_app.extensions["gateway_proxy"]
    public_reads: PublicReads = current_app.extensions["gateway_public_reads"]
    if public_reads.handles(request):  # gallery pages and work details: the edge cache
        return public_reads.answer(request, lambda anonymous: proxy.forward(service, anonymous))
    return proxy.forward(service)


def _add_routes(blueprint: Blueprint) -> None:
    for index, (prefix, service) in enumerate(ROUTES):
        blueprint.add_url_rule(prefix, f"route_{index}", forward, methods=METHODS,
                               defaults={"service": service, "rest": ""})
        blueprint.add_url_rule(f"{prefix}/<path:rest>", f"route_{index}_sub", forward,
                               methods=METHODS, defaults={"service": service})


_add_routes(bp)


def init_proxy(app: Flask, settings: Settings, config: GatewayConfig, pool_size: int) -> None:
    app.extensions["gateway_proxy"] = Proxy(settings, config, pool_size)
    app.register_blueprint(bp)
