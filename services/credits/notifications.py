"""Telling a user about credits an administrator granted: a notification in the gallery's bell."""
from __future__ import annotations

import hashlib

from services.gallery.client import GalleryClient

MAX_DEDUPE_KEY = 128  # the gallery's limit


class GalleryNotifications:
    """Grant notices through the gallery's bell (best effort: the grant has committed already)."""

    def __init__(self, base_url: str, service_token: str, timeout: float = 3.0) -> None:
        self.client = GalleryClient(base_url, service_token, timeout)

    def credits_granted(self, user_id: int, amount: int, reason: str, key: str) -> None:
        """Notify ``user_id`` of a grant; ``key`` is the grant's ledger idempotency key, so a
        repeated notice for the same grant is stored once."""
        self.client.notify(user_id, "credits.granted", "获得积分 / Credits granted", f"{amount} credits: {reason}",
                           {"amount": amount, "reason": reason}, dedupe_key(key))

    def close(self) -> None:
        self.client.close()


def dedupe_key(key: str) -> str:
    """The ledger key itself, or its digest when it is longer than the gallery accepts."""
    if len(key) <= MAX_DEDUPE_KEY:
        return key
    return "admin_grant:sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
