"""JSON-over-HTTP calls between platform services: service token, request id, the envelope.

Every service's ``client.py`` (how others call that service) is built on ``InternalHttp``.
A non-2xx envelope becomes ``ServiceError`` carrying the callee's own status, code and
details; no answer, a timeout or a reply without an envelope becomes ``ServiceUnavailable``
with the client's ``unavailable_code``. A call made on behalf of a user may forward the
user's access token (``access_token=``), so the callee applies that user's rights.
"""
from __future__ import annotations

from typing import Any

import requests
from flask import has_request_context
from requests.adapters import HTTPAdapter

from shared.errors import ServiceError, ServiceUnavailable
from shared.web import REQUEST_ID_HEADER, SERVICE_TOKEN_HEADER, request_id

Timeout = float | tuple[float, float]
PAGE_SIZE = 100
MAX_PAGES = 1000  # 100 000 items: a bound, so a misbehaving service cannot loop a caller forever


class InternalHttp:
    def __init__(self, base_url: str, service_token: str, timeout: Timeout, unavailable_code: str,
                 pool_size: int = 32) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.unavailable_code = unavailable_code
        self.session = requests.Session()
        self.session.trust_env = False  # internal calls never go through a proxy set in the environment
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers[SERVICE_TOKEN_HEADER] = service_token

    def get(self, path: str, params: dict[str, Any] | None = None, access_token: str | None = None) -> Any:
        return self._call("GET", path, access_token, params=params)

    def post(self, path: str, body: dict[str, Any], access_token: str | None = None) -> Any:
        return self._call("POST", path, access_token, json=body)

    def get_all_pages(self, path: str, access_token: str | None = None) -> list[dict[str, Any]]:
        """Every item of a paged listing (``{"items", "total"}`` with ``page``/``pageSize``)."""
        items: list[dict[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            data = self.get(path, {"page": page, "pageSize": PAGE_SIZE}, access_token)
            items.extend(data["items"])
            if not data["items"] or len(items) >= data["total"]:
                break
        return items

    def close(self) -> None:
        self.session.close()

    def _call(self, method: str, path: str, access_token: str | None, **kwargs: Any) -> Any:
        headers = {REQUEST_ID_HEADER: request_id()} if has_request_context() else {}
        if access_token:
            headers["Authorization"] = f"Bearer {access_token}"
        try:
            response = self.session.request(method, self.base_url + path, headers=headers,
                                            timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ServiceUnavailable(f"{self.base_url} is unreachable ({exc.__class__.__name__}).",
                                     code=self.unavailable_code) from exc
        envelope = _envelope(response)
        if envelope is None:
            raise ServiceUnavailable(f"{self.base_url} answered {response.status_code} without an envelope.",
                                     code=self.unavailable_code, details={"upstreamStatus": response.status_code})
        if envelope.get("success") is True and response.ok:
            return envelope.get("data")
        error = envelope.get("error") or {}
        raise ServiceError(error.get("message"), code=error.get("code"), status=response.status_code,
                           details=error.get("details"))


def is_not_found(exc: ServiceError, code: str) -> bool:
    """The callee answered 404 with this error code (the thing asked about does not exist)."""
    return exc.status == 404 and exc.code == code


def _envelope(response: requests.Response) -> dict | None:
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or "success" not in body:
        return None
    return body
