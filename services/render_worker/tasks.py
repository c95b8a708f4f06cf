"""Celery adapters: named, time-limited, safe to run twice. Logic lives in ``pipeline``."""
from __future__ import annotations

from shared.tasks import RENDER_RUN_JOB

from .pipeline import RenderContext, build_context, render_job
from .worker import celery, settings

_context: RenderContext | None = None


def _worker_context(worker_id: str) -> RenderContext:
    """One context (DB pool, HTTP sessions) per worker process."""
    global _context
    if _context is None:
        _context = build_context(settings, worker_id)
    return _context


@celery.task(name=RENDER_RUN_JOB, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             soft_time_limit=settings.job_deadline_seconds + 60, time_limit=settings.job_deadline_seconds + 120)
def run_job(job_id: str) -> None:
    render_job(job_id, _worker_context(run_job.request.hostname or "render"))
