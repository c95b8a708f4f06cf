"""Reverse proxy from the public ``/api`` paths to the internal auth, credits, gallery,
integrations and safety services.

Only a fixed set of client headers is forwarded; the gateway adds the service token,
its request id and the client address. Small upstream bodies are read whole (the
connection goes straight back to the pool); large or unsized ones are streamed.

The hot path talks to urllib3's keep-alive pools directly: ``requests`` would add a
fraction of a millisecond per call (hooks, cookies, environment proxy lookups) for
features a fixed internal hop does not use. The pools never reuse a connection idle
longer than the services' keep-alive allows (``shared.internal_http.fresh_pool``), and a
connection closed before any answer is retried once for methods safe to repeat.
"""
from __future__ import annotations

import logging
from urllib.parse import quote, urlsplit

import urllib3
from flask import Blueprint, Flask, Response, current_app, request
from urllib3.exceptions import (ConnectTimeoutError, HTTPError, NewConnectionError, ProtocolError,
                               ReadTimeoutError)

from services.gateway.clientaddr import client_address
from services.gateway.config import GatewayConfig
from services.gateway.public_reads import PublicReads
from shared.config import Settings
from shared.errors import ServiceUnavailable
from shared.internal_http import fresh_pool
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
        self.name = name
        self.prefix = urlsplit(base_url).path.rstrip("/")
        self.pool = fresh_pool(base_url, maxsize=pool_size, block=False, retries=False)

    def close(self) -> None:
        self.pool.close()


class Proxy:
    """Forwards the current request to one named upstream service."""

    def __init__(self, settings: Settings, config: GatewayConfig, pool_size: int) -> None:
        self.upstreams = {name: Upstream(name, url, pool_size) for name, url in (
            ("auth", settings.auth_url), ("credits", settings.credits_url), ("gallery", settings.gallery_url),
            ("integrations", settings.integrations_url), ("safety", settings.safety_url))}
        self.service_token = settings.service_token
        self.read_timeout = urllib3.Timeout(connect=config.connect_timeout, read=config.read_timeout)
        self.get_timeout = urllib3.Timeout(connect=config.connect_timeout, read=config.get_read_timeout)

    def close(self) -> None:
        for upstream in self.upstreams.values():
            upstream.close()

    def forward(self, service: str, anonymous: bool = False) -> Response:
        """The upstream's answer to the current request (``anonymous``: without its Authorization)."""
        upstream = self.upstreams[service]
        path = upstream.prefix + quote(request.path)
        if request.query_string:
            path += "?" + request.query_string.decode("latin-1")
        method = request.method
        timeout = self.get_timeout if method == "GET" else self.read_timeout
        body = request.get_data(cache=False) or None
        headers = self._request_headers(anonymous)
        attempts = 2 if method in IDEMPOTENT_METHODS else 1
        for attempt in range(attempts):
            try:
                answer = upstream.pool.urlopen(method, path, body=body, headers=headers, timeout=timeout,
                                               retries=False, redirect=False, preload_content=False,
                                               decode_content=False, assert_same_host=False)
                break
            except ProtocolError:
                if attempt + 1 < attempts:
                    continue  # a pooled connection the upstream had closed; one fresh try
                raise _unavailable(service, "closed the connection") from None
            except NewConnectionError as exc:
                raise _unavailable(service, "is unreachable") from exc
            except ConnectTimeoutError as exc:
                raise _unavailable(service, f"did not accept a connection within {timeout.connect_timeout:g} s") from exc
            except ReadTimeoutError as exc:
                raise _unavailable(service, f"did not answer within {timeout.read_timeout:g} s") from exc
            except HTTPError as exc:
                raise _unavailable(service, "failed") from exc
        return _response(answer)

    def _request_headers(self, anonymous: bool) -> dict[str, str]:
        incoming = request.headers
        headers = {name: value for name in FORWARDED_REQUEST_HEADERS if (value := incoming.get(name))}
        if anonymous:
            headers.pop("Authorization", None)
        client = client_address()
        headers[SERVICE_TOKEN_HEADER] = self.service_token
        headers[REQUEST_ID_HEADER] = request_id()
        headers["X-Forwarded-For"] = client
        headers["X-Real-IP"] = client
        return headers


def _unavailable(service: str, what: str) -> ServiceUnavailable:
    log.warning("%s %s: the %s service %s", request.method, request.path, service, what)
    return ServiceUnavailable(f"The {service} service {what}; try again shortly.", details={"service": service})


def _response(answer: urllib3.BaseHTTPResponse) -> Response:
    headers = _response_headers(answer.headers)
    length = answer.headers.get("Content-Length")
    if length is not None and length.isascii() and length.isdigit() and int(length) <= BUFFERED_BODY_LIMIT:
        try:
            body = answer.read(decode_content=False)  # reading to the end returns the connection
        except HTTPError as exc:
            answer.close()
            raise ServiceUnavailable("An internal service broke off its answer; try again shortly.") from exc
        return Response(body, status=answer.status, headers=headers)
    response = Response(answer.stream(STREAM_CHUNK, decode_content=False), status=answer.status, headers=headers)

    def _finish() -> None:
        # The client may have stopped reading: never pool a half-read connection.
        answer.close()
        answer.release_conn()

    response.call_on_close(_finish)
    return response


def _response_headers(upstream_headers) -> list[tuple[str, str]]:
    named_in_connection = {part.strip().lower()
                           for part in upstream_headers.get("Connection", "").split(",") if part.strip()}
    dropped = HOP_BY_HOP_HEADERS | SERVER_OWNED_HEADERS | named_in_connection
    return [(name, value) for name, value in upstream_headers.items() if name.lower() not in dropped]


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
