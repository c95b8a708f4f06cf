"""Edge cache hits answered in front of Flask.

A public read whose answer is in the edge cache costs the gateway little more than a
dictionary lookup, so Flask's request machinery (context, routing, hooks) would be most of
its cost. This WSGI middleware answers those hits itself and does the edge's work for them
exactly as the hooks do: the request id (``shared.web``), the global per-address rate limit
(checked against what this process knows, counted after the answer is sent:
``services.gateway.ratelimit``), the security headers (``services.gateway.security``).

Signed-in hits too, when the caller is plainly a user this process has verified before: an
``Authorization: Bearer`` token whose claims the app remembers (``shared.tokens.VerifiedTokens``;
its expiry checked), a ``user`` without API-token scopes, not revoked (the same MGET as every
request), with the page's likes in the gallery's Redis set (``services.gallery.liked``). The
answer is the one ``services/gateway/public_reads.py`` gives (``personal_body``).

Everything else goes to Flask unchanged: a miss or an entry due to be refetched, any request
with a body, an ``Origin`` or service-token header, any other ``Authorization`` (a token not
seen before, an API token, an administrator), any doubt about revocation or likes (Redis
failing, a set missing: Flask answers, the gallery rebuilds), an address this process knows
to be over its limit (Flask answers the 429). A new before/after-request hook of the gateway
that must also apply to cache hits belongs here too.
"""
from __future__ import annotations

from typing import Callable, Iterable

from redis import Redis

from services.gallery.client import GalleryClient
from services.gateway.cache import ANSWERS, CACHED_PATHS, EdgeCache, Entry, key_of
from services.gateway.clientaddr import Network, resolve_client
from services.gateway.public_reads import PERSONAL_HEADERS, personal_body
from services.gateway.ratelimit import Limit, RateLimited, RateLimiter, RateLimits
from services.gateway.security import SECURITY_HEADERS
from shared.errors import ServiceError
from shared.tokens import Claims, VerifiedTokens, is_revoked
from shared.web import REQUEST_ID_HEADER, VALID_REQUEST_ID, new_request_id

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]
# Any of these sends the request through Flask.
_NOT_FOR_THE_FAST_PATH = ("HTTP_ORIGIN", "HTTP_X_SERVICE_TOKEN", "CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING")
_BEARER = "Bearer "
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
                 trusted_proxies: tuple[Network, ...], cors: bool, tokens: VerifiedTokens | None = None,
                 revocations: Redis | None = None, gallery: GalleryClient | None = None) -> None:
        self.app = app
        self.cache = cache
        self.tokens = tokens
        self.revocations = revocations
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
        viewer = self._viewer(authorization) if authorization is not None else None
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
        peer = wsgi_env.get("REMOTE_ADDR", "")
        address = resolve_client(peer, [wsgi_env.get("HTTP_X_FORWARDED_FOR", "")], self.trusted) \
            if self.trusted else peer
        limit = Limit("global:ip", self.rates.global_ip, address)
        try:
            self.limiter.check_known(limit)
        except RateLimited:
            return self.app(wsgi_env, start_response)  # Flask answers the 429

        presented = wsgi_env.get("HTTP_X_REQUEST_ID", "")
        if personal is not None:
            status, body = "200 OK", personal
            headers = [("Content-Type", entry.content_type), ("Content-Length", str(len(body))), *PERSONAL_HEADERS]
        else:
            status, headers, body = self.cache.answer(entry, "HIT", wsgi_env.get("HTTP_IF_NONE_MATCH"), self.vary)
        ANSWERS["HIT"].inc()
        headers += _SECURITY_HEADERS
        headers.append((REQUEST_ID_HEADER, presented if VALID_REQUEST_ID.fullmatch(presented) else new_request_id()))
        start_response(status, headers)
        return _CountAfterSending(body, lambda: self.limiter.count_quietly(limit))

    def _viewer(self, authorization: str) -> Claims | None:
        """A plain user's claims this app verified before, unrevoked; None on any doubt."""
        if self.tokens is None or self.revocations is None or not authorization.startswith(_BEARER):
            return None
        claims = self.tokens.get(authorization[len(_BEARER):])
        if claims is None or claims.role != "user" or claims.scopes is not None:
            return None
        try:
            return None if is_revoked(self.revocations, claims) else claims
        except ServiceError:  # Redis failing: Flask gives the answer (503)
            return None

    def _personal(self, entry: Entry, viewer: Claims) -> bytes | None:
        if self.gallery is None:
            return None
        return personal_body(entry, viewer, lambda work_ids: self.gallery.liked_in_redis(viewer.user_id, work_ids))
