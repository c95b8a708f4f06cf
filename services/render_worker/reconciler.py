"""The periodic reconciler: the database is the truth, the queue only a hint.

Every worker runs it; a Redis lock lets one pass run at a time in the whole pool. Each
pass finds
* running jobs whose worker's heartbeat expired (SIGKILL, host lost): put back in line
  and re-sent, or failed with a refund once they used up ``RENDER_MAX_ATTEMPTS``;
* running jobs far past their deadline on a live worker: failed with a refund (the
  worker's own late finish is then a no-op);
* queued jobs whose queue message is gone (Redis restarted without its data): re-sent.
So nothing stays "running" or "queued" forever.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

from shared.db import utcnow

from services.render import jobs
from services.render.dispatch import message_marked, send_job
from services.render_worker.pipeline import RenderContext, fail_and_refund
from services.render_worker.retention import sweep_if_due

log = logging.getLogger(__name__)

LOCK_KEY = "render:reconciler:lock"
# A live worker's job is failed this long after its deadline.
OVERDUE_GRACE_SECONDS = 120


@dataclass
class Report:
    requeued: int = 0
    resent: int = 0
    failed: int = 0


def reconcile_once(ctx: RenderContext) -> Report | None:
    """One pass; None when another worker holds the lock."""
    redis = ctx.events.redis
    ttl = max(5, int(ctx.config.reconcile_seconds * 2))
    if not redis.set(LOCK_KEY, ctx.worker_id, nx=True, ex=ttl):
        return None
    report = Report()
    try:
        _running(ctx, report)
        _queued(ctx, report)
    finally:
        if redis.get(LOCK_KEY) == ctx.worker_id:
            redis.delete(LOCK_KEY)
    if report.requeued or report.resent or report.failed:
        log.info("reconciler: %s", report)
    return report


def _running(ctx: RenderContext, report: Report) -> None:
    now = utcnow()
    with ctx.db.read() as session:
        running = jobs.jobs_in_status(session, "running")
    for job in running:
        template = ctx.templates.get(job.workflow)
        deadline = min(template.deadline_seconds if template else ctx.settings.job_deadline_seconds,
                       ctx.settings.job_deadline_seconds)
        if ctx.alive(job.worker or ""):
            overdue = job.started_at and now - job.started_at > timedelta(seconds=deadline + OVERDUE_GRACE_SECONDS)
            if overdue and fail_and_refund(ctx, job, "DEADLINE_EXCEEDED",
                                           "The job ran far past its deadline and was stopped."):
                report.failed += 1
            continue
        if now - job.updated_at < timedelta(seconds=ctx.config.alive_ttl):
            continue  # just claimed or just beat; give the heartbeat its time
        if job.attempts >= ctx.config.max_attempts:
            if fail_and_refund(ctx, job, "WORKER_LOST",
                               f"The render worker was lost {job.attempts} times while running this job."):
                report.failed += 1
            continue
        with ctx.db.transaction() as session:
            requeued = jobs.requeue(session, job.id, job.worker)
        if requeued and ctx.celery is not None:
            log.warning("job %s: worker %s is gone; putting the job back in line", job.id, job.worker)
            send_job(ctx.celery, ctx.events.redis, job.queue, job.id)
            report.requeued += 1


def _queued(ctx: RenderContext, report: Report) -> None:
    cutoff = utcnow() - timedelta(seconds=ctx.config.lost_message_seconds)
    with ctx.db.read() as session:
        waiting = jobs.jobs_in_status(session, "queued", updated_before=cutoff)
    for job in waiting:
        if ctx.celery is not None and not message_marked(ctx.events.redis, job.id):
            log.warning("job %s: its queue message is gone; sending it again", job.id)
            send_job(ctx.celery, ctx.events.redis, job.queue, job.id)
            report.resent += 1


class ReconcilerThread(threading.Thread):
    """Reconciles every ``RENDER_RECONCILE_SECONDS``; sweeps expired outputs when due."""

    def __init__(self, ctx: RenderContext) -> None:
        super().__init__(name="render-reconciler", daemon=True)
        self.ctx = ctx
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.ctx.config.reconcile_seconds):
            try:
                reconcile_once(self.ctx)
                sweep_if_due(self.ctx)
            except Exception:  # a failed pass is retried on the next tick
                log.exception("reconciler pass failed")

    def stop(self) -> None:
        self._stopped.set()
