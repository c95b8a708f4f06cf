"""Releasing holds nobody settled: expired holds whose jobs are finished or gone.

A hold outlives its job's deadline (``CREDITS_HOLD_TTL_SECONDS``, default twice the job
deadline). Past that, a sweep asks the render domain about the job: when it has finished or
the render domain does not know it, the rest of the hold goes back to the user under the key
``expire:<jobId>``; a job still queued or running keeps its hold (its worker settles it).

One pass runs as ``flask --app services.credits.app:create_app credits sweep-holds``; the
process ``python -m services.credits.sweeper`` runs one periodically.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from shared.errors import ServiceError
from services.credits.service import CreditsService
from services.render.client import FINISHED_JOB_STATUSES

log = logging.getLogger(__name__)

JobStatus = Callable[[str], "str | None"]


@dataclass
class SweepReport:
    released: dict[str, int] = field(default_factory=dict)  # job id → credits returned
    kept: list[str] = field(default_factory=list)  # jobs still running
    unreachable: list[str] = field(default_factory=list)  # the render domain could not say

    def summary(self) -> str:
        return (f"released {len(self.released)} holds ({sum(self.released.values())} credits), "
                f"kept {len(self.kept)} of running jobs, {len(self.unreachable)} unanswered")


def sweep_holds(credits: CreditsService, job_status: JobStatus, now: datetime | None = None,
                limit: int = 500) -> SweepReport:
    """One pass over open holds past expiry. Safe to run twice or from two processes."""
    report = SweepReport()
    for job_id in credits.expired_holds(now, limit):
        try:
            status = job_status(job_id)
        except ServiceError as exc:
            log.warning("could not ask the render domain about job %s: %s", job_id, exc.message)
            report.unreachable.append(job_id)
            continue
        if status is not None and status not in FINISHED_JOB_STATUSES:
            report.kept.append(job_id)
            continue
        released = credits.expire_hold(job_id, now)
        if released is not None:
            report.released[job_id] = released
    return report
