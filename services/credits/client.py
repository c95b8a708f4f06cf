"""HTTP client for the credits internal API, used by auth, the gateway and the render worker."""
from __future__ import annotations

from typing import Any

import requests
from flask import has_request_context
from requests.adapters import HTTPAdapter

from shared.errors import ServiceError, ServiceUnavailable
from shared.web import REQUEST_ID_HEADER, SERVICE_TOKEN_HEADER, request_id


class CreditsClient:
    def __init__(self, base_url: str, service_token: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=32))
        self.session.mount("https://", HTTPAdapter(pool_connections=4, pool_maxsize=32))
        self.session.headers[SERVICE_TOKEN_HEADER] = service_token

    def open_account(self, user_id: int) -> dict:
        """``{"available", "held"}``; opens the account with the signup bonus if missing."""
        return self._post("/internal/accounts", {"userId": user_id})

    def hold(self, user_id: int, job_id: str, amount: int, description: str) -> dict:
        return self._post("/internal/holds", {"userId": user_id, "jobId": job_id, "amount": amount,
                                              "description": description})

    def capture(self, job_id: str, amount: int, idempotency_key: str) -> dict:
        return self._post(f"/internal/holds/{job_id}/capture",
                          {"amount": amount, "idempotencyKey": idempotency_key})

    def release(self, job_id: str, idempotency_key: str) -> dict:
        return self._post(f"/internal/holds/{job_id}/release", {"idempotencyKey": idempotency_key})

    def close(self) -> None:
        self.session.close()

    def _post(self, path: str, body: dict[str, Any]) -> dict:
        headers = {REQUEST_ID_HEADER: request_id()} if has_request_context() else {}
        try:
            response = self.session.post(self.base_url + path, json=body, headers=headers,
                                         timeout=self.timeout)
        except requests.RequestException as exc:
            raise ServiceUnavailable(f"The credits service is unreachable ({exc.__class__.__name__}).",
                                     code="CREDITS_UNAVAILABLE") from exc
        envelope = _envelope(response)
        if envelope is None:
            raise ServiceUnavailable(f"The credits service answered {response.status_code} without an envelope.",
                                     code="CREDITS_UNAVAILABLE")
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
