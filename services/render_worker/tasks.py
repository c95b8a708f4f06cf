"""Celery adapters: named, safe to run twice. Logic lives in ``pipeline``."""
from __future__ import annotations

from shared.tasks import RENDER_RUN_JOB

from services.render_worker.pipeline import render_job
from services.render_worker.worker import celery, context


@celery.task(name=RENDER_RUN_JOB, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job(job_id: str, hops: int = 0) -> None:
    render_job(job_id, context(run_job.request.hostname), hops)
