"""The render domain's internal API as other services call it (mounted by the gateway):
outputs and jobs, for the gallery (saving works), credits (the hold sweeper) and
integrations (admission on behalf of service accounts, and the outputs of their jobs).

The gallery never trusts file keys from a browser: it resolves an output id to its owner,
file keys and parameters here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from shared.errors import ServiceError, ServiceUnavailable
from shared.internal_http import InternalHttp, Timeout, is_not_found

# The scheduler's fair-share lanes (``services.render.scheduler``): people's jobs wait in
# ``interactive``, service accounts' in ``batch`` unless an administrator chose otherwise.
LANES = ("interactive", "batch")
INTERACTIVE, BATCH = LANES

FINISHED_JOB_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
SETTLING = "settling"


@dataclass(frozen=True)
class OutputRecord:
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
    def from_payload(cls, data: dict[str, Any]) -> OutputRecord:
        try:
            return cls(id=str(data["id"]), job_id=str(data["jobId"]), user_id=int(data["userId"]),
                       image_key=str(data["imageKey"]), thumbnail_key=str(data["thumbnailKey"]),
                       width=int(data["width"]), height=int(data["height"]),
                       file_size=int(data["fileSize"]), sha256=str(data["sha256"]),
                       workflow=str(data["workflow"]), params=dict(data["params"]),
                       index=int(data.get("index") or 0),
                       workflow_version=None if data.get("workflowVersion") is None
                       else str(data["workflowVersion"])[:32],
                       graph=dict(data["graph"]) if data.get("graph") is not None else None,
                       source_work_id=int(data["sourceWorkId"]) if data.get("sourceWorkId") is not None else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise ServiceUnavailable("The render service answered with a malformed output.",
                                     code="UPSTREAM_MALFORMED") from exc


class RenderClient:
    def __init__(self, base_url: str, service_token: str, timeout: Timeout = 5.0) -> None:
        self.http = InternalHttp(base_url, service_token, timeout, unavailable_code="RENDER_UNAVAILABLE")

    def output(self, output_id: str) -> OutputRecord:
        """The output record; the callee's 404 ``OUTPUT_NOT_FOUND`` when unknown."""
        return OutputRecord.from_payload(self.http.get(f"/internal/outputs/{quote(output_id, safe='')}"))

    def job_outputs(self, job_id: str) -> list[OutputRecord]:
        """Every output of a job, by index; the callee's 404 ``JOB_NOT_FOUND`` when unknown."""
        data = self.http.get(f"/internal/jobs/{quote(job_id, safe='')}/outputs")
        try:
            items = list(data["items"])
        except (KeyError, TypeError) as exc:
            raise ServiceUnavailable("The render service answered with a malformed output.",
                                     code="UPSTREAM_MALFORMED") from exc
        return sorted((OutputRecord.from_payload(item) for item in items), key=lambda output: output.index)

    def job_summaries(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """What the credits statement shows of up to 100 jobs, by id: ``userId, status, workflow,
        prompt, imagesDelivered, thumbnailUrl, width, height`` (unknown jobs are left out)."""
        data = self.http.get("/internal/jobs", params={"ids": ",".join(job_ids)})
        try:
            return {str(item["id"]): dict(item) for item in data["items"]}
        except (KeyError, TypeError) as exc:
            raise ServiceUnavailable("The render service answered with a malformed job list.",
                                     code="UPSTREAM_MALFORMED") from exc

    def admit(self, user_id: int, params: dict[str, Any], idempotency_key: str, max_active_jobs: int,
              workflows: list[str] | None, lane: str = BATCH) -> dict[str, Any]:
        """Admit a job on behalf of a service account, exactly as ``POST /api/generate`` would:
        ``{"job", "queuePosition", "estimatedStartSeconds", ...}``. The callee's refusal is a
        ``ServiceError`` with its code; no answer at all is ``ServiceUnavailable`` (RENDER_UNAVAILABLE)."""
        return self.http.post("/internal/jobs", {"userId": user_id, "params": params, "idempotencyKey": idempotency_key,
                                                 "maxActiveJobs": max_active_jobs, "workflows": workflows,
                                                 "lane": lane})

    def job(self, job_id: str) -> dict[str, Any] | None:
        """``{"id", "userId", "status", "idempotencyKey"}``, or None for an unknown job."""
        try:
            return dict(self.http.get(f"/internal/jobs/{quote(job_id, safe='')}"))
        except ServiceError as exc:
            if is_not_found(exc, "JOB_NOT_FOUND"):
                return None
            raise

    def job_status(self, job_id: str) -> str | None:
        """The job's status as its hold sees it, or None when the render domain does not know the
        job. A finished job whose credits are not settled yet reads ``"settling"``: its hold still
        has captures to take, so it is not swept."""
        try:
            job = self.http.get(f"/internal/jobs/{quote(job_id, safe='')}")
        except ServiceError as exc:
            if is_not_found(exc, "JOB_NOT_FOUND"):
                return None
            raise
        status = str(job["status"])
        return SETTLING if status in FINISHED_JOB_STATUSES and job.get("settled") is False else status

    def close(self) -> None:
        self.http.close()
