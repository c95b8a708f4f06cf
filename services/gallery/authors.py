"""Author names and avatars, read from auth's internal directory and cached in the process.

Avatars change rarely and a page shows at most a hundred authors, so the gallery keeps
each author's entry for ``GALLERY_AUTHOR_CACHE_SECONDS`` instead of copying avatars into
works (which would go stale forever) or calling auth for every item. The authors of a page
missing from the cache are read in one call (``GET /internal/users?ids=``), not one each.
When auth cannot answer, items fall back to the username stored on the work and no avatar,
and the failure is remembered briefly so a down auth service does not slow every page.
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
BATCH = 100  # auth's limit per directory call


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
        """Cached entries of the known users among ``user_ids``; the missing ones in one call."""
        now = time.monotonic()
        wanted = list(dict.fromkeys(user_ids))
        entries = {user_id: self._cache.get(user_id) for user_id in wanted}
        missing = [user_id for user_id, cached in entries.items() if cached is None or cached[0] < now]
        for start in range(0, len(missing), BATCH):
            entries.update(self._refresh(missing[start:start + BATCH], now))
        return {user_id: cached[1] for user_id, cached in entries.items()
                if cached is not None and cached[1] is not None}

    def _refresh(self, user_ids: list[int], now: float) -> dict[int, tuple[float, dict[str, Any] | None]]:
        try:
            found = self.auth.users(user_ids)
            fresh = {user_id: (now + self.ttl, found.get(user_id)) for user_id in user_ids}
        except (ServiceError, ValueError, TypeError, KeyError) as exc:
            log.warning("authors %s not readable from auth (%s)", user_ids, exc.__class__.__name__)
            fresh = {user_id: (now + FAILURE_CACHE_SECONDS, None) for user_id in user_ids}
        with self._lock:
            if len(self._cache) + len(fresh) > MAX_ENTRIES:
                self._cache.clear()
            self._cache.update(fresh)
        return fresh

    def close(self) -> None:
        self.auth.close()
