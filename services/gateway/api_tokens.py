"""API tokens at the edge: a request bearing ``Authorization: Bearer pat_…`` has it exchanged
(by auth, ``POST /internal/tokens/exchange``) for a short-lived access token carrying the
API token's scopes, and goes on with that one. Every service behind the gateway, and the
render API mounted in it, then sees an ordinary access token and checks it locally.

The exchanged token is kept in this process until shortly before it expires, at most
``API_TOKEN_CACHE_SECONDS`` (so auth records the token's last use about that often).
Revoking the API token needs no cache eviction: its ``revoked:pat:<id>`` mark refuses the
exchanged token in every service at once.
"""
from __future__ import annotations

import hashlib
import threading
import time

from flask import Flask, request

from services.auth.client import AuthClient
from shared.tokens import bearer_token

API_TOKEN_PREFIX = "pat_"
REFRESH_MARGIN_SECONDS = 30  # an exchanged token is renewed this long before it expires
MAX_CACHED = 10_000


class TokenExchange:
    def __init__(self, auth: AuthClient, cache_seconds: float) -> None:
        self.auth = auth
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, str]] = {}  # SHA-256 of the API token → (renew at, access token)

    def access_token(self, api_token: str) -> str:
        """The access token for ``api_token``; auth's 401 (or 503) when it cannot be exchanged."""
        digest = hashlib.sha256(api_token.encode("utf-8")).hexdigest()
        now = time.time()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        data = self.auth.exchange_token(api_token)
        renew_at = min(float(data["expiresAt"]) - REFRESH_MARGIN_SECONDS, now + self.cache_seconds)
        with self._lock:
            if len(self._cache) >= MAX_CACHED:
                self._cache = {key: entry for key, entry in self._cache.items() if entry[0] > now}
            self._cache[digest] = (renew_at, data["accessToken"])
        return data["accessToken"]

    def close(self) -> None:
        self.auth.close()


def init_api_tokens(app: Flask, exchange: TokenExchange) -> None:
    """Swap an API token for its access token before anything reads the caller's identity."""
    app.extensions["gateway_token_exchange"] = exchange

    @app.before_request
    def _exchange_api_token() -> None:
        presented = bearer_token()
        if presented is not None and presented.startswith(API_TOKEN_PREFIX):
            request.environ.update(HTTP_AUTHORIZATION=f"Bearer {exchange.access_token(presented)}")
