"""Reverse proxy from the public ``/api`` paths to the internal auth, credits and gallery
services.

Only a fixed set of client headers is forwarded; the gateway adds the service token,
its request id and the client address. Upstream bodies are streamed back unchanged.
"""
from __future__ import annotations

from urllib.parse import quote

import requests
from flask import Blueprint, Flask, Response, current_app, request
from requests.adapters import HTTPAdapter

from shared.config import Settings
from shared.errors import ServiceUnavailable
from shared.web import REQUEST_ID_HEADER, SERVICE_TOKEN_HEADER, request_id

CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 30.0
STREAM_CHUNK = 64 * 1024

# Public path prefix -> service. Werkzeug prefers the rule with more literal segments,
# so "/api/users/credits/..." reaches credits while the rest of "/api/users/..." reaches auth.
ROUTES: tuple[tuple[str, str], ...] = (
    ("/api/users/credits", "credits"),
    ("/api/admin/credits", "credits"),
    ("/api/credits", "credits"),
    ("/api/users", "auth"),
    ("/api/admin/users", "auth"),
    ("/api/works", "gallery"),
    ("/api/admin/works", "gallery"),
)

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
FORWARDED_REQUEST_HEADERS = ("Authorization", "Content-Type", "Accept", "User-Agent")
HOP_BY_HOP_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
# The gateway's own server writes these; passing the upstream's would duplicate them.
SERVER_OWNED_HEADERS = frozenset({"server", "date"})

bp = Blueprint("proxy", __name__)


def pooled_session(pool_size: int) -> requests.Session:
    """A keep-alive session with one pool per upstream, sized for the worker's threads."""
    session = requests.Session()
    session.headers.clear()
    adapter = HTTPAdapter(pool_connections=8, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class Proxy:
    """Forwards the current request to one named upstream service."""

    def __init__(self, settings: Settings, session: requests.Session) -> None:
        self.upstreams = {"auth": settings.auth_url, "credits": settings.credits_url,
                          "gallery": settings.gallery_url}
        self.service_token = settings.service_token
        self.session = session

    def forward(self, service: str) -> Response:
        url = self.upstreams[service].rstrip("/") + quote(request.path)
        if request.query_string:
            url += "?" + request.query_string.decode("latin-1")
        body = request.get_data(cache=False)
        try:
            upstream = self.session.request(
                request.method, url, data=body or None, headers=self._request_headers(),
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), stream=True, allow_redirects=False)
        except requests.RequestException as exc:
            raise ServiceUnavailable(f"{service} is unavailable; try again shortly.",
                                     details={"service": service}) from exc
        response = Response(upstream.raw.stream(STREAM_CHUNK, decode_content=False),
                            status=upstream.status_code,
                            headers=_response_headers(upstream.headers))
        response.call_on_close(upstream.close)
        return response

    def _request_headers(self) -> dict[str, str]:
        headers = {name: value for name in FORWARDED_REQUEST_HEADERS
                   if (value := request.headers.get(name))}
        client = request.remote_addr or ""
        headers[SERVICE_TOKEN_HEADER] = self.service_token
        headers[REQUEST_ID_HEADER] = request_id()
        headers["X-Forwarded-For"] = client
        headers["X-Real-IP"] = client
        return headers


def _response_headers(upstream_headers: requests.structures.CaseInsensitiveDict) -> list[tuple[str, str]]:
    named_in_connection = {part.strip().lower()
                           for part in upstream_headers.get("Connection", "").split(",") if part.strip()}
    dropped = HOP_BY_HOP_HEADERS | SERVER_OWNED_HEADERS | named_in_connection
    return [(name, value) for name, value in upstream_headers.items() if name.lower() not in dropped]


def forward(service: str, rest: str = "") -> Response:
    proxy: Proxy = current_app.extensions["gateway_proxy"]
    return proxy.forward(service)


def _add_routes(blueprint: Blueprint) -> None:
    for index, (prefix, service) in enumerate(ROUTES):
        blueprint.add_url_rule(prefix, f"route_{index}", forward, methods=METHODS,
                               defaults={"service": service, "rest": ""})
        blueprint.add_url_rule(f"{prefix}/<path:rest>", f"route_{index}_sub", forward,
                               methods=METHODS, defaults={"service": service})


_add_routes(bp)


def init_proxy(app: Flask, settings: Settings, session: requests.Session) -> None:
    app.extensions["gateway_proxy"] = Proxy(settings, session)
    app.register_blueprint(bp)
