"""Client for the gateway's internal render-output route.

The gallery never trusts file keys from a browser: it resolves an output id to its
owner, file keys and parameters through ``GET /internal/outputs/<id>``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from flask import has_request_context

from shared.errors import NotFound, ServiceUnavailable
from shared.web import REQUEST_ID_HEADER, SERVICE_TOKEN_HEADER, request_id


@dataclass(frozen=True)
class RenderOutput:
    id: str
    job_id: str
    user_id: int
    image_key: str
    thumbnail_key: str
    width: int
    height: int
    file_size: int
    sha256: str
    workflow: str
    params: dict[str, Any]

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> RenderOutput:
        try:
            return cls(id=str(data["id"]), job_id=str(data["jobId"]), user_id=int(data["userId"]),
                       image_key=str(data["imageKey"]), thumbnail_key=str(data["thumbnailKey"]),
                       width=int(data["width"]), height=int(data["height"]),
                       file_size=int(data["fileSize"]), sha256=str(data["sha256"]),
                       workflow=str(data["workflow"]), params=dict(data["params"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ServiceUnavailable("The render service answered with a malformed output.",
                                     code="UPSTREAM_MALFORMED") from exc


class OutputsClient:
    """Pooled HTTP client for ``/internal/outputs/<id>`` on the gateway."""

    def __init__(self, base_url: str, service_token: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers[SERVICE_TOKEN_HEADER] = service_token

    def get_output(self, output_id: str) -> RenderOutput:
        """The output record; NotFound (OUTPUT_NOT_FOUND) if unknown, ServiceUnavailable if unreachable."""
        headers = {REQUEST_ID_HEADER: request_id()} if has_request_context() else {}
        url = f"{self.base_url}/internal/outputs/{quote(output_id, safe='')}"
        try:
            response = self.session.get(url, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ServiceUnavailable("The render service is unreachable; try again shortly.") from exc
        if response.status_code == 404:
            raise NotFound("This output does not exist.", code="OUTPUT_NOT_FOUND")
        if response.status_code != 200:
            raise ServiceUnavailable("The render service could not answer; try again shortly.",
                                     details={"upstreamStatus": response.status_code})
        try:
            data = response.json()["data"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ServiceUnavailable("The render service answered with a malformed output.",
                                     code="UPSTREAM_MALFORMED") from exc
        return RenderOutput.from_payload(data)

    def close(self) -> None:
        self.session.close()
