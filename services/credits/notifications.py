"""Telling a user about credits an administrator granted: a notification in the gallery's bell."""
from __future__ import annotations

import hashlib
import logging

from shared.errors import ServiceError
from services.credits.http import InternalHttp

log = logging.getLogger(__name__)

MAX_DEDUPE_KEY = 128  # the gallery's limit


class GalleryNotifications:
    """``POST {gallery_url}/internal/notifications`` with the service token, best effort: the
    grant has committed already, so a gallery that is down or refuses costs only the notice."""

    def __init__(self, base_url: str, service_token: str, timeout: float = 3.0) -> None:
        self.http = InternalHttp(base_url, service_token, timeout, unavailable_code="GALLERY_UNAVAILABLE")

    def credits_granted(self, user_id: int, amount: int, reason: str, key: str) -> None:
        """Notify ``user_id`` of a grant; ``key`` is the grant's ledger idempotency key, so a
        repeated notice for the same grant is stored once."""
        body = {"userId": user_id, "type": "credits.granted", "title": "获得积分 / Credits granted",
                "body": f"{amount} credits: {reason}", "data": {"amount": amount, "reason": reason},
                "dedupeKey": dedupe_key(key)}
        try:
            self.http.post("/internal/notifications", body)
        except ServiceError as exc:
            log.warning("user %s was not notified of the %s credits granted (key %s): %s %s",
                        user_id, amount, key, exc.code, exc.message)

    def close(self) -> None:
        self.http.close()


def dedupe_key(key: str) -> str:
    """The ledger key itself, or its digest when it is longer than the gallery accepts."""
    if len(key) <= MAX_DEDUPE_KEY:
        return key
    return "admin_grant:sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
