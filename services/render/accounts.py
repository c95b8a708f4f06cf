"""The limits of service accounts, for admission over HTTP with an API token: integrations
keeps each account's allowed workflows and concurrency; they are read here and kept a few
seconds (a change takes effect within ``LIMITS_CACHE_SECONDS``). The queue API sends them
with each admission itself (``POST /internal/jobs``)."""
from __future__ import annotations

import threading
import time

from services.integrations.client import IntegrationsClient
from services.render.scheduler import BATCH
from services.render.service import AccountLimits
from shared.tokens import Claims

LIMITS_CACHE_SECONDS = 10.0


class ServiceAccountLimits:
    def __init__(self, integrations: IntegrationsClient, cache_seconds: float = LIMITS_CACHE_SECONDS) -> None:
        self.integrations = integrations
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cache: dict[int, tuple[float, AccountLimits | None]] = {}

    def for_caller(self, claims: Claims) -> AccountLimits | None:
        """A service account's limits; None for a person, or an account integrations does not
        know (the platform's defaults apply)."""
        if not claims.is_service_account:
            return None
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(claims.user_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        data = self.integrations.account_limits(claims.user_id)
        limits = None if data is None else AccountLimits(
            int(data["maxActiveJobs"]),
            frozenset(data["workflows"]) if data.get("workflows") is not None else None,
            data.get("lane", BATCH))
        with self._lock:
            self._cache[claims.user_id] = (now + self.cache_seconds, limits)
        return limits

    def close(self) -> None:
        self.integrations.close()
