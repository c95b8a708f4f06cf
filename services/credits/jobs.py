"""What credits asks the gateway about render jobs: is a job still running?"""
from __future__ import annotations

from shared.errors import ServiceError
from shared.internal_http import InternalHttp

FINISHED_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


class JobsClient:
    """``GET {gateway_internal_url}/internal/jobs/<jobId>`` with the service token."""

    def __init__(self, base_url: str, service_token: str, timeout: float = 5.0) -> None:
        self.http = InternalHttp(base_url, service_token, timeout, unavailable_code="GATEWAY_UNAVAILABLE")

    def status(self, job_id: str) -> str | None:
        """The job's status, or None when the gateway does not know the job (404 JOB_NOT_FOUND).
        Raises ServiceUnavailable / ServiceError when the answer is anything else."""
        try:
            return str(self.http.get(f"/internal/jobs/{job_id}")["status"])
        except ServiceError as exc:
            if exc.status == 404 and exc.code == "JOB_NOT_FOUND":
                return None
            raise

    def close(self) -> None:
        self.http.close()
