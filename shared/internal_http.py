"""JSON-over-HTTP calls between platform services: service token, request id, the envelope.

A non-2xx envelope becomes ``ServiceError`` carrying the callee's own status, code and
details; no answer, a timeout or a reply without an envelope becomes ``ServiceUnavailable``.
"""
from __future__ import annotations

from typing import Any

import requests
from flask import has_request_context
from requests.adapters import HTTPAdapter

from shared.errors import ServiceError, ServiceUnavailable
from shared.web import REQUEST_ID_HEADER, SERVICE_TOKEN_HEADER, request_id


class InternalHttp:
    def __init__(self, base_url: str, service_token: str, timeout: float, unavailable_code: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.unavailable_code = unavailable_code
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers[SERVICE_TOKEN_HEADER] = service_token

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._call("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, json=body)

    def close(self) -> None:
        self.session.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {REQUEST_ID_HEADER: request_id()} if has_request_context() else {}
        try:
            response = self.session.request(method, self.base_url + path, headers=headers,
                                            timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ServiceUnavailable(f"{self.base_url} is unreachable ({exc.__class__.__name__}).",
                                     code=self.unavailable_code) from exc
        envelope = _envelope(response)
        if envelope is None:
            raise ServiceUnavailable(f"{self.base_url} answered {response.status_code} without an envelope.",
                                     code=self.unavailable_code)
        if envelope.get("success") is True and response.ok:
            return envelope.get("data")
        error = envelope.get("error") or {}
        raise ServiceError(error.get("message"), code=error.get("code"), status=response.status_code,
                           details=error.get("details"))


def _envelope(response: requests.Response) -> dict | None:
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or "success" not in body:
        return None
    return body
