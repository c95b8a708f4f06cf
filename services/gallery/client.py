"""The gallery's internal API as other services call it: the notification bell."""
from __future__ import annotations

import logging
from typing import Any

from shared.errors import ServiceError
from shared.internal_http import InternalHttp

log = logging.getLogger(__name__)


class NotificationsClient:
    """``POST {gallery_url}/internal/notifications``, best effort: the caller's own change has
    committed already, so a gallery that is down or refuses costs only the notice."""

    def __init__(self, base_url: str, service_token: str, timeout: float = 3.0) -> None:
        self.http = InternalHttp(base_url, service_token, timeout, unavailable_code="GALLERY_UNAVAILABLE")

    def notify(self, user_id: int, kind: str, title: str, body: str = "", data: dict[str, Any] | None = None,
               dedupe_key: str | None = None) -> bool:
        """Store and push one notification; the same ``dedupe_key`` is stored once."""
        payload: dict[str, Any] = {"userId": user_id, "type": kind, "title": title, "body": body,
                                   "data": data or {}}
        if dedupe_key:
            payload["dedupeKey"] = dedupe_key
        try:
            self.http.post("/internal/notifications", payload)
        except ServiceError as exc:
            log.warning("user %s was not notified (%s, key %s): %s %s", user_id, kind, dedupe_key,
                        exc.code, exc.message)
            return False
        return True

    def close(self) -> None:
        self.http.close()
