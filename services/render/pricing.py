"""Prices come from credits (``GET /api/credits/pricing``), cached for a short time."""
from __future__ import annotations

import logging
import threading
import time

from services.credits.client import CreditsClient
from shared.errors import ServiceError

log = logging.getLogger(__name__)


class PricingCache:
    def __init__(self, credits: CreditsClient, ttl: float) -> None:
        self.credits = credits
        self.ttl = ttl
        self._lock = threading.Lock()
        self._prices: dict[str, int] = {}
        self._fetched = float("-inf")

    def prices(self) -> dict[str, int]:
        """Workflow → credits per image; the last known list when credits does not answer."""
        with self._lock:
            if time.monotonic() - self._fetched < self.ttl:
                return self._prices
            try:
                self._prices = {str(k): int(v) for k, v in self.credits.pricing()["pricing"].items()}
            except (ServiceError, KeyError, TypeError, ValueError) as exc:
                log.warning("price list not refreshed: %s", exc)
            self._fetched = time.monotonic()
            return self._prices
