"""Small HTTP clients for what auth reads from credits and gallery: the caller's credit
history and works (data export) and a user's public counts (public profile)."""
from __future__ import annotations

import logging
from typing import Any

import requests
from flask import has_request_context
from requests.adapters import HTTPAdapter

from shared.errors import ServiceError, ServiceUnavailable
from shared.web import REQUEST_ID_HEADER, SERVICE_TOKEN_HEADER, request_id

log = logging.getLogger(__name__)

EXPORT_PAGE_SIZE = 100
MAX_EXPORT_PAGES = 1000  # 100 000 rows: a bound, so a misbehaving service cannot loop us forever


class ServiceClient:
    """A pooled session that sends the service token and the request id, and unwraps the envelope."""

    def __init__(self, name: str, base_url: str, service_token: str, timeout: float = 5.0) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.mount("http://", HTTPAdapter(pool_connections=2, pool_maxsize=16))
        self.session.mount("https://", HTTPAdapter(pool_connections=2, pool_maxsize=16))
        self.session.headers[SERVICE_TOKEN_HEADER] = service_token

    def get(self, path: str, params: dict[str, Any] | None = None, access_token: str | None = None) -> Any:
        headers = {REQUEST_ID_HEADER: request_id()} if has_request_context() else {}
        if access_token:
            headers["Authorization"] = f"Bearer {access_token}"
        unavailable = f"{self.name.upper()}_UNAVAILABLE"
        try:
            response = self.session.get(self.base_url + path, params=params, headers=headers,
                                        timeout=self.timeout)
        except requests.RequestException as exc:
            raise ServiceUnavailable(f"The {self.name} service is unreachable.", code=unavailable) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "success" not in body:
            raise ServiceUnavailable(f"The {self.name} service answered {response.status_code} without an envelope.",
                                     code=unavailable)
        if body["success"] is True and response.ok:
            return body.get("data")
        error = body.get("error") or {}
        raise ServiceError(error.get("message"), code=error.get("code"), status=response.status_code,
                           details=error.get("details"))

    def all_pages(self, path: str, access_token: str) -> list[dict[str, Any]]:
        """Every item of a paged listing (``{"items", "total"}``), fetched 100 at a time."""
        items: list[dict[str, Any]] = []
        for page in range(1, MAX_EXPORT_PAGES + 1):
            data = self.get(path, {"page": page, "pageSize": EXPORT_PAGE_SIZE}, access_token)
            items.extend(data["items"])
            if not data["items"] or len(items) >= data["total"]:
                break
        return items

    def close(self) -> None:
        self.session.close()


class CreditsReader(ServiceClient):
    def __init__(self, base_url: str, service_token: str) -> None:
        super().__init__("credits", base_url, service_token)

    def transactions(self, access_token: str) -> list[dict[str, Any]]:
        """The caller's whole ledger, newest first (read as the caller, with their token)."""
        return self.all_pages("/api/users/credits/transactions", access_token)


class GalleryReader(ServiceClient):
    def __init__(self, base_url: str, service_token: str) -> None:
        super().__init__("gallery", base_url, service_token)

    def my_works(self, access_token: str) -> list[dict[str, Any]]:
        return self.all_pages("/api/works/my", access_token)

    def user_stats(self, user_id: int) -> dict[str, int]:
        """``{"works", "likesReceived"}``; zeros (with a warning) when gallery cannot say."""
        try:
            stats = self.get(f"/internal/users/{user_id}/stats")
            return {"works": int(stats["works"]), "likesReceived": int(stats["likesReceived"])}
        except (ServiceError, KeyError, TypeError, ValueError) as exc:
            log.warning("gallery stats of user %s unavailable (%s); showing zeros", user_id,
                        getattr(exc, "code", exc.__class__.__name__))
            return {"works": 0, "likesReceived": 0}
