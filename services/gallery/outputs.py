"""Client for the gateway's internal render-output routes.

The gallery never trusts file keys from a browser: it resolves an output id to its
owner, file keys and parameters through ``GET /internal/outputs/<id>``, and a job's
outputs through ``GET /internal/jobs/<jobId>/outputs``.
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
    index: int = 0
    workflow_version: str | None = None
    graph: dict[str, Any] | None = None
    source_work_id: int | None = None

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> RenderOutput:
        try:
            return cls(id=str(data["id"]), job_id=str(data["jobId"]), user_id=int(data["userId"]),
                       image_key=str(data["imageKey"]), thumbnail_key=str(data["thumbnailKey"]),
                       width=int(data["width"]), height=int(data["height"]),
                       file_size=int(data["fileSize"]), sha256=str(data["sha256"]),
                       workflow=str(data["workflow"]), params=dict(data["params"]),
                       index=int(data.get("index") or 0),
                       workflow_version=_optional_str(data.get("workflowVersion")),
                       graph=dict(data["graph"]) if data.get("graph") is not None else None,
                       source_work_id=int(data["sourceWorkId"]) if data.get("sourceWorkId") is not None else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise ServiceUnavailable("The render service answered with a malformed output.",
                                     code="UPSTREAM_MALFORMED") from exc


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)[:32]


class OutputsClient:
    """Pooled HTTP client for ``/internal/outputs/<id>`` on the gateway."""

    def __init__(self, base_url: str, service_token: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers[SERVICE_TOKEN_HEADER] = service_token

    def _get(self, path: str, not_found: NotFound) -> Any:
        headers = {REQUEST_ID_HEADER: request_id()} if has_request_context() else {}
        try:
            response = self.session.get(f"{self.base_url}{path}", headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ServiceUnavailable("The render service is unreachable; try again shortly.") from exc
        if response.status_code == 404:
            raise not_found
        if response.status_code != 200:
            raise ServiceUnavailable("The render service could not answer; try again shortly.",
                                     details={"upstreamStatus": response.status_code})
        try:
            return response.json()["data"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ServiceUnavailable("The render service answered with a malformed output.",
                                     code="UPSTREAM_MALFORMED") from exc

    def get_output(self, output_id: str) -> RenderOutput:
        """The output record; NotFound (OUTPUT_NOT_FOUND) if unknown, ServiceUnavailable if unreachable."""
        data = self._get(f"/internal/outputs/{quote(output_id, safe='')}",
                         NotFound("This output does not exist.", code="OUTPUT_NOT_FOUND"))
        return RenderOutput.from_payload(data)

    def job_outputs(self, job_id: str) -> list[RenderOutput]:
        """Every output of a job, by index; NotFound (JOB_NOT_FOUND) if the job is unknown."""
        data = self._get(f"/internal/jobs/{quote(job_id, safe='')}/outputs",
                         NotFound("This job does not exist.", code="JOB_NOT_FOUND"))
        try:
            items = list(data["items"])
        except (KeyError, TypeError) as exc:
            raise ServiceUnavailable("The render service answered with a malformed output.",
                                     code="UPSTREAM_MALFORMED") from exc
        return sorted((RenderOutput.from_payload(item) for item in items), key=lambda output: output.index)

    def close(self) -> None:
        self.session.close()
