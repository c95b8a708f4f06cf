"""Author names and avatars, read from auth's internal directory and cached in the process.

Avatars change rarely and a page shows at most a hundred authors, so the gallery keeps
each author's entry for ``GALLERY_AUTHOR_CACHE_SECONDS`` instead of copying avatars into
works (which would go stale forever) or calling auth for every item. When auth cannot
answer, items fall back to the username stored on the work and no avatar, and the
failure is remembered briefly so a down auth service does not slow every page.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterable

from services.auth.client import AuthClient
from shared.errors import ServiceError

log = logging.getLogger(__name__)
FAILURE_CACHE_SECONDS = 30
MAX_ENTRIES = 50_000


class AuthorDirectory:
    def __init__(self, auth: AuthClient, ttl_seconds: int) -> None:
        self.auth = auth
        self.ttl = ttl_seconds
        self._cache: dict[int, tuple[float, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()

    def fetch(self, user_id: int) -> dict[str, Any] | None:
        """The directory entry, uncached; None for an unknown user (ServiceError when auth fails)."""
        return self.auth.user(user_id)

    def lookup(self, user_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Cached entries of the known users among ``user_ids``."""
        now = time.monotonic()
        found: dict[int, dict[str, Any]] = {}
        for user_id in dict.fromkeys(user_ids):
            cached = self._cache.get(user_id)
            if cached is None or cached[0] < now:
                cached = self._refresh(user_id, now)
            if cached[1] is not None:
                found[user_id] = cached[1]
        return found

    def _refresh(self, user_id: int, now: float) -> tuple[float, dict[str, Any] | None]:
        try:
            entry: tuple[float, dict[str, Any] | None] = (now + self.ttl, self.fetch(user_id))
        except (ServiceError, ValueError, TypeError) as exc:
            log.warning("author %s not readable from auth (%s)", user_id, exc.__class__.__name__)
            entry = (now + FAILURE_CACHE_SECONDS, None)
        with self._lock:
            if len(self._cache) >= MAX_ENTRIES:
                self._cache.clear()
            self._cache[user_id] = entry
        return entry

    def close(self) -> None:
        self.auth.close()
