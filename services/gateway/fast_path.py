"""Edge cache hits and plain proxied reads answered in front of Flask.

A public read whose answer is in the edge cache costs the gateway little more than a
dictionary lookup, so Flask's request machinery (context, routing, hooks) would be most of
its cost. This WSGI middleware answers those hits itself and does the edge's work for them
exactly as the hooks do: the request id (``shared.web``), the global per-address rate limit
(checked against what this process knows, counted after the answer is sent:
``services.gateway.ratelimit``), the security headers (``services.gateway.security``).

Signed-in hits too, when the caller is plainly a user this process has verified before: an
``Authorization: Bearer`` token whose claims the app remembers (``shared.tokens.VerifiedTokens``;
its expiry checked), a ``user`` without API-token scopes, not revoked, with the page's likes
in the gallery's Redis set (``services.gallery.liked``): the revocation MGET and the likes
SMISMEMBER go to Redis in one pipeline, one round trip. The answer is the one
``services/gateway/public_reads.py`` gives (``personal_body``).

Everything else goes to Flask unchanged: a miss or an entry due to be refetched, any request
with a body, an ``Origin`` or service-token header, any other ``Authorization`` (a token not
seen before, an API token, an administrator), any doubt about revocation or likes (Redis
failing, a set missing: Flask answers, the gallery rebuilds), an address this process knows
to be over its limit (Flask answers the 429).

Proxied reads (``ProxiedReadsFastPath``): a GET that Flask would route to the reverse proxy
(``services/gateway/proxy.py``), without a body, ``Origin``, service-token header or API
token, and not a public read the edge cache handles, is sent to its service with the same
``Proxy.send`` and the same headers, and answered with the hooks' work done here: the
request id (echoed, and in log lines), the global per-address rate limit (as above), the
security headers, ``Vary: Origin`` when CORS is configured, the request metrics, and the
error envelope when the service gives no answer. Flask's request machinery (context,
routing, eight hooks, werkzeug's response) was about half of such a request's CPU.

A new before/after-request hook of the gateway that must also apply to these requests
belongs here too.
"""
from __future__ import annotations

import time
from typing import Callable, Iterable, Iterator

import orjson
import redis
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.routing import Map, Rule, RoutingException

from services.gallery.client import GalleryClient
from services.gallery.liked import liked_from, liked_key, liked_members
from services.gateway.api_tokens import API_TOKEN_PREFIX
from services.gateway.cache import ANSWERS, CACHED_PATHS, EdgeCache, Entry, key_of
from services.gateway.clientaddr import Network, resolve_client
from services.gateway.proxy import (FORWARDED_REQUEST_HEADERS, STREAM_CHUNK, Proxy, buffered, read_whole,
                                    response_headers)
from services.gateway.public_reads import PERSONAL_HEADERS, personal_body
from services.gateway.ratelimit import Limit, RateLimited, RateLimiter, RateLimits
from services.gateway.security import SECURITY_HEADERS
from shared.http_transport import Answer
from shared.errors import ServiceError
from shared.metrics import RequestMetrics
from shared.tokens import Claims, VerifiedTokens, revocation_keys, revoked_by
from shared.web import REQUEST_ID_HEADER, request_id_context, wsgi_request_id

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]
# Any of these sends the request through Flask.
_NOT_FOR_THE_FAST_PATH = ("HTTP_ORIGIN", "HTTP_X_SERVICE_TOKEN", "CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING")
_SECURITY_HEADERS = list(SECURITY_HEADERS.items())


def _client(wsgi_env: dict, trusted: tuple[Network, ...]) -> str:
    peer = wsgi_env.get("REMOTE_ADDR", "")
    return resolve_client(peer, [wsgi_env.get("HTTP_X_FORWARDED_FOR", "")], trusted) if trusted else peer


class _CountAfterSending(list):
    """The body, with the request counted against its limit once the server has sent it."""

    def __init__(self, body: bytes, count: Callable[[], None]) -> None:
        super().__init__([body] if body else [])
        self._count = count

    def close(self) -> None:
        self._count()


class CachedReadsFastPath:
    def __init__(self, app: WsgiApp, cache: EdgeCache, limiter: RateLimiter, rates: RateLimits,
                 trusted_proxies: tuple[Network, ...], cors: bool, tokens: VerifiedTokens | None = None,
                 gallery: GalleryClient | None = None) -> None:
        self.app = app
        self.cache = cache
        self.tokens = tokens
        self.gallery = gallery
        self.limiter = limiter
        self.rates = rates
        self.trusted = trusted_proxies
        self.vary = "Authorization, Origin" if cors else "Authorization"

    def __call__(self, wsgi_env: dict, start_response: Callable) -> Iterable[bytes]:
        if wsgi_env["REQUEST_METHOD"] != "GET" or any(wsgi_env.get(name) for name in _NOT_FOR_THE_FAST_PATH):
            return self.app(wsgi_env, start_response)
        path = wsgi_env.get("PATH_INFO", "")
        if CACHED_PATHS.fullmatch(path) is None:
            return self.app(wsgi_env, start_response)
        authorization = wsgi_env.get("HTTP_AUTHORIZATION")
        viewer = self._claims(authorization) if authorization is not None else None
        if authorization is not None and viewer is None:
            return self.app(wsgi_env, start_response)
        generation = self.cache.generation()
        entry = self.cache.fresh(key_of(path, wsgi_env.get("QUERY_STRING", "")), generation) \
            if generation is not None else None
        if entry is None or self.cache.ageing(entry):
            return self.app(wsgi_env, start_response)  # Flask fetches it (one request per key; others wait or are served)
        personal = self._personal(entry, viewer) if viewer is not None else None
        if viewer is not None and personal is None:
            return self.app(wsgi_env, start_response)
        limit = Limit("global:ip", self.rates.global_ip, _client(wsgi_env, self.trusted))
        try:
            self.limiter.check_known(limit)
        except RateLimited:
            return self.app(wsgi_env, start_response)  # Flask answers the 429

        if personal is not None:
            status, body = "200 OK", personal
            headers = [("Content-Type", entry.content_type), ("Content-Length", str(len(body))), *PERSONAL_HEADERS]
        else:
            status, headers, body = self.cache.answer(entry, "HIT", wsgi_env.get("HTTP_IF_NONE_MATCH"), self.vary)
        ANSWERS["HIT"].inc()
        headers += _SECURITY_HEADERS
        headers.append((REQUEST_ID_HEADER, wsgi_request_id(wsgi_env)))
        start_response(status, headers)
        return _CountAfterSending(body, lambda: self.limiter.count_quietly(limit))

    def _claims(self, authorization: str) -> Claims | None:
        """A plain user's claims this app verified before (revocation is checked with the likes)."""
        if self.tokens is None or self.gallery is None or self.gallery.likes is None:
            return None
        claims = self.tokens.of_header(authorization)
        if claims is None or claims.role != "user" or claims.scopes is not None:
            return None
        return claims

    def _personal(self, entry: Entry, viewer: Claims) -> bytes | None:
        return personal_body(entry, viewer, lambda work_ids: self._liked_unless_revoked(viewer, work_ids))

    def _liked_unless_revoked(self, viewer: Claims, work_ids: list[int]) -> set[int] | None:
        """Which of ``work_ids`` the viewer likes, and that the token is not revoked, in one
        round trip (the likes' Redis holds the revocation marks too: the platform's one Redis);
        None on any doubt (revoked, the set missing, Redis failing): Flask answers (401, the
        gallery's likes, 503)."""
        pipe = self.gallery.likes.pipeline(transaction=False)
        pipe.mget(revocation_keys(viewer))
        pipe.smismember(liked_key(viewer.user_id), liked_members(work_ids))
        try:
            marks, flags = pipe.execute()
        except redis.RedisError:
            return None
        return None if revoked_by(viewer, marks) else liked_from(work_ids, flags)


# Any of these sends a GET through Flask.
_NOT_PLAIN = ("HTTP_ORIGIN", "HTTP_X_SERVICE_TOKEN", "HTTP_TRANSFER_ENCODING")
_FORWARDED_KEYS = {name: "CONTENT_TYPE" if name == "Content-Type" else "HTTP_" + name.upper().replace("-", "_")
                   for name in FORWARDED_REQUEST_HEADERS}
MAX_ROUTES = 10_000  # paths whose route a process remembers
_UNSEEN = object()
# The hooks write these; the service's own would be duplicates.
_REWRITTEN = frozenset(name.lower() for name in (*SECURITY_HEADERS, REQUEST_ID_HEADER))


class _Streamed:
    """A large answer's body, streamed; its connection dropped if the client stops reading."""

    def __init__(self, answer: Answer, count: Callable[[], None]) -> None:
        self._answer = answer
        self._count = count

    def __iter__(self) -> Iterator[bytes]:
        return self._answer.stream(STREAM_CHUNK)

    def close(self) -> None:
        self._answer.close()
        self._count()


class ProxiedReadsFastPath:
    def __init__(self, app: WsgiApp, url_map: Map, proxy: Proxy, limiter: RateLimiter, rates: RateLimits,
                 trusted_proxies: tuple[Network, ...], cors: bool, edge_cache: bool, service: str = "gateway") -> None:
        self.app = app
        self.urls = url_map.bind("gateway")
        self.proxy = proxy
        self.limiter = limiter
        self.rates = rates
        self.trusted = trusted_proxies
        self.cors = cors
        self.edge_cache = edge_cache
        self.metrics = RequestMetrics(service)
        self._routes: dict[str, Rule | None] = {}  # path → the proxy's rule for it, or None: Flask's

    def __call__(self, wsgi_env: dict, start_response: Callable) -> Iterable[bytes]:
        if (wsgi_env["REQUEST_METHOD"] != "GET" or wsgi_env.get("CONTENT_LENGTH") not in (None, "", "0")
                or any(wsgi_env.get(name) for name in _NOT_PLAIN) or API_TOKEN_PREFIX in wsgi_env.get("HTTP_AUTHORIZATION", "")):
            return self.app(wsgi_env, start_response)
        path = wsgi_env.get("PATH_INFO") or "/"
        if not path.isascii():
            path = path.encode("latin-1").decode("utf-8", "replace")  # as werkzeug reads it
        if self.edge_cache and CACHED_PATHS.fullmatch(path) is not None:
            return self.app(wsgi_env, start_response)  # the edge cache's (services/gateway/public_reads.py)
        rule = self._routes.get(path, _UNSEEN)
        if rule is _UNSEEN:
            rule = self._route(path)
        if rule is None:
            return self.app(wsgi_env, start_response)
        started = time.perf_counter()
        client = _client(wsgi_env, self.trusted)
        limit = Limit("global:ip", self.rates.global_ip, client)
        try:
            self.limiter.check_known(limit)
        except RateLimited:
            return self.app(wsgi_env, start_response)  # Flask answers the 429

        request_id = wsgi_request_id(wsgi_env)
        headers = self.proxy.request_headers(lambda name: wsgi_env.get(_FORWARDED_KEYS[name]), client, request_id)
        answer: Answer | None = None
        with request_id_context(request_id):
            try:
                answer = self.proxy.send(rule.defaults["service"], "GET", path, wsgi_env.get("QUERY_STRING", ""),
                                         headers, None)
                status = answer.status
                passed = response_headers(answer.headers, _REWRITTEN)
                body = read_whole(answer) if buffered(answer) else None
            except ServiceError as exc:
                status, passed, body = exc.status, [("Content-Type", "application/json")], orjson.dumps(
                    {"success": False, "error": {"code": exc.code, "message": exc.message, "details": exc.details}})
        if self.cors:
            _vary_origin(passed)
        passed += _SECURITY_HEADERS
        passed.append((REQUEST_ID_HEADER, request_id))
        self.metrics.observe("GET", rule.rule, status, started)
        start_response(f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}", passed)
        count = lambda: self.limiter.count_quietly(limit)  # noqa: E731
        if body is None and answer is not None:
            return _Streamed(answer, count)
        return _CountAfterSending(body or b"", count)

    def _route(self, path: str) -> Rule | None:
        """The proxy's rule for a GET of ``path``; None for no route, another method's, a
        redirect or a route of the gateway's own (Flask answers those)."""
        try:
            rule, _ = self.urls.match(path, "GET", return_rule=True)
        except (HTTPException, RoutingException):
            rule = None
        if rule is not None and not rule.endpoint.startswith("proxy."):
            rule = None
        if len(self._routes) >= MAX_ROUTES:
            self._routes.clear()
        self._routes[path] = rule
        return rule


def _vary_origin(headers: list[tuple[str, str]]) -> None:
    """``Vary: Origin`` added as the CORS hook adds it to every answer."""
    for index, (name, value) in enumerate(headers):
        if name.lower() == "vary":
            if "origin" not in value.lower():
                headers[index] = (name, f"{value}, Origin")
            return
    headers.append(("Vary", "Origin"))
