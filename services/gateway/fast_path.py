"""Edge cache hits answered in front of Flask.

An anonymous public read whose answer is in the edge cache costs the gateway little more
than a dictionary lookup, so Flask's request machinery (context, routing, hooks) would be
most of its cost. This WSGI middleware answers those hits itself and does the edge's work
for them exactly as the hooks do: the request id (``shared.web``), the global per-address
rate limit (checked against what this process knows, counted after the answer is sent:
``services.gateway.ratelimit``), the security headers (``services.gateway.security``).

Everything else goes to Flask unchanged: a miss or an entry due to be refetched, any request with a body, an
``Authorization``, ``Origin`` or service-token header, an address this process knows to be
over its limit (Flask answers the 429). A new before/after-request hook of the gateway that
must also apply to cache hits belongs here too.
"""
from __future__ import annotations

from typing import Callable, Iterable

from services.gateway.cache import ANSWERS, CACHED_PATHS, EdgeCache, key_of
from services.gateway.clientaddr import Network, resolve_client
from services.gateway.ratelimit import Limit, RateLimited, RateLimiter, RateLimits
from services.gateway.security import SECURITY_HEADERS
from shared.web import REQUEST_ID_HEADER, VALID_REQUEST_ID, new_request_id

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]
# Any of these sends the request through Flask.
_NOT_FOR_THE_FAST_PATH = ("HTTP_AUTHORIZATION", "HTTP_ORIGIN", "HTTP_X_SERVICE_TOKEN", "CONTENT_LENGTH",
                          "HTTP_TRANSFER_ENCODING")
_SECURITY_HEADERS = list(SECURITY_HEADERS.items())


class _CountAfterSending(list):
    """The body, with the request counted against its limit once the server has sent it."""

    def __init__(self, body: bytes, count: Callable[[], None]) -> None:
        super().__init__([body] if body else [])
        self._count = count

    def close(self) -> None:
        self._count()


class CachedReadsFastPath:
    def __init__(self, app: WsgiApp, cache: EdgeCache, limiter: RateLimiter, rates: RateLimits,
                 trusted_proxies: tuple[Network, ...], cors: bool) -> None:
        self.app = app
        self.cache = cache
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
        generation = self.cache.generation()
        entry = self.cache.fresh(key_of(path, wsgi_env.get("QUERY_STRING", "")), generation) \
            if generation is not None else None
        if entry is None or self.cache.ageing(entry):
            return self.app(wsgi_env, start_response)  # Flask fetches it (one request per key; others wait or are served)
        peer = wsgi_env.get("REMOTE_ADDR", "")
        address = resolve_client(peer, [wsgi_env.get("HTTP_X_FORWARDED_FOR", "")], self.trusted) \
            if self.trusted else peer
        limit = Limit("global:ip", self.rates.global_ip, address)
        try:
            self.limiter.check_known(limit)
        except RateLimited:
            return self.app(wsgi_env, start_response)  # Flask answers the 429

        presented = wsgi_env.get("HTTP_X_REQUEST_ID", "")
        status, headers, body = self.cache.answer(entry, "HIT", wsgi_env.get("HTTP_IF_NONE_MATCH"), self.vary)
        ANSWERS["HIT"].inc()
        headers += _SECURITY_HEADERS
        headers.append((REQUEST_ID_HEADER, presented if VALID_REQUEST_ID.fullmatch(presented) else new_request_id()))
        start_response(status, headers)
        return _CountAfterSending(body, lambda: self.limiter.count_quietly(limit))
