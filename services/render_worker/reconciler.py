"""The reconciler: the database is the truth, the queue only a hint.

It is a process of its own, ``python -m services.render_worker.reconciler`` (``make run``
starts one), so jobs and holds are looked after while every render worker is dead. Run
one or more anywhere that reaches the database, Redis and credits: a Redis lock lets one
pass run at a time. Every ``RENDER_RECONCILE_SECONDS`` a pass finds
* running jobs whose worker's heartbeat expired (SIGKILL, host lost): put back at the
  front of the scheduler's line, or failed with a refund once they used up
  ``RENDER_MAX_ATTEMPTS``;
* running jobs far past their deadline on a live worker: failed with a refund (the
  worker's own late finish is then a no-op);
* queued jobs of a queue no live worker has offered for ``RENDER_NO_WORKER_GRACE_SECONDS``:
  failed with ``NO_WORKER`` and refunded;
* finished jobs whose outbox is not empty (``services.render.outbox``): credits that did
  not answer their worker are settled, final events Redis did not take are published;
and once an hour it removes expired outputs (``retention``). Queued jobs missing from the
scheduler's line (Redis restarted without its data) are the scheduler's to find
(``services.render_worker.scheduler``). So nothing stays "running"
or "queued" forever, no hold outlives its job, and every job's owner hears how it ended.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from shared.config import load_settings
from shared.db import utcnow
from shared.metrics import register_collector, serve_metrics
from shared.outage import Outage
from shared.web import configure_logging

from services.render import jobs
from services.render.catalog import read_live_catalogs
from services.render.config import load_config
from services.render.metrics import queue_collectors
from services.render.scheduler import entry_for
from services.render_worker.pipeline import RenderContext, build_context, fail_and_refund
from services.render_worker.retention import sweep_if_due

log = logging.getLogger(__name__)

LOCK_KEY = "render:reconciler:lock"
# A live worker's job is failed this long after its deadline.
OVERDUE_GRACE_SECONDS = 120
# A finished job's worker empties its outbox itself (retrying credits for
# RENDER_CREDITS_RETRY_SECONDS); the reconciler takes over once that and a call's timeout have passed.
OUTBOX_MARGIN_SECONDS = 10


@dataclass
class Report:
    requeued: int = 0
    failed: int = 0
    unserved: int = 0
    settled: int = 0
    announced: int = 0

    def __bool__(self) -> bool:
        return any(vars(self).values())


class Reconciler:
    def __init__(self, ctx: RenderContext) -> None:
        self.ctx = ctx
        self.started = time.monotonic()
        # queue → when a live worker last offered it (seen by this process).
        self.offered_at: dict[str, float] = {}

    def run_once(self) -> Report | None:
        """One pass; None when another reconciler holds the lock."""
        redis = self.ctx.events.redis
        ttl = max(5, int(self.ctx.config.reconcile_seconds * 2))
        if not redis.set(LOCK_KEY, self.ctx.worker_id, nx=True, ex=ttl):
            return None
        report = Report()
        try:
            self._running(report)
            self._unserved(report)
            self._outbox(report)
        finally:
            if redis.get(LOCK_KEY) == self.ctx.worker_id:
                redis.delete(LOCK_KEY)
        if report:
            log.info("reconciler: %s", report)
        return report

    def run(self, stop: threading.Event) -> None:
        """A pass now and every ``RENDER_RECONCILE_SECONDS`` until ``stop``; expired outputs when due."""
        outage = Outage(log, "reconciler pass")
        while not stop.is_set():
            try:
                self.run_once()
                sweep_if_due(self.ctx)
            except Exception as exc:  # a pass that failed (database or Redis away) is retried on the next tick
                outage.failed(exc, f"retrying in {self.ctx.config.reconcile_seconds} s")
            else:
                outage.passed()
            stop.wait(self.ctx.config.reconcile_seconds)

    def _running(self, report: Report) -> None:
        ctx, now = self.ctx, utcnow()
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
            if requeued:
                log.warning("job %s: worker %s is gone; putting the job back in line", job.id, job.worker)
                ctx.fair.enqueue(entry_for(job, template), front=True)
                report.requeued += 1

    def _unserved(self, report: Report) -> None:
        """Fail the queued jobs of queues no live worker has offered within the grace."""
        ctx, now = self.ctx, time.monotonic()
        # A killed worker's catalog outlives it (its key's TTL); its heartbeat does not.
        offered = {queue for catalog in read_live_catalogs(ctx.events.redis) if ctx.alive(catalog.get("workerId"))
                   for queue in catalog.get("queues", [])}
        self.offered_at.update((queue, now) for queue in offered)
        grace = ctx.config.no_worker_grace_seconds
        with ctx.db.read() as session:
            waiting = jobs.jobs_in_status(session, "queued")
        for job in waiting:
            if job.queue in offered or now - self.offered_at.get(job.queue, self.started) < grace:
                continue
            if fail_and_refund(ctx, job, "NO_WORKER",
                               f"No render worker able to run {job.workflow} has been available for "
                               f"{grace:.0f} seconds; the job was stopped and its credits returned."):
                ctx.fair.remove(job.id)
                report.unserved += 1

    def _outbox(self, report: Report) -> None:
        """Settle, then announce, what finished jobs still owe (each stops at the first outage)."""
        ctx = self.ctx
        cutoff = utcnow() - timedelta(seconds=ctx.config.credits_retry_seconds + OUTBOX_MARGIN_SECONDS)
        with ctx.db.read() as session:
            unsettled = jobs.unsettled_jobs(session, finished_before=cutoff)
        for job in unsettled:
            if not ctx.outbox.settle(job.id):
                break  # credits still does not answer; the next pass tries again
            report.settled += 1
        with ctx.db.read() as session:
            unannounced = jobs.unannounced_jobs(session, finished_before=cutoff)
        for job in unannounced:
            if not ctx.outbox.announce(job.id):
                break  # Redis still does not answer
            report.announced += 1


def main() -> None:
    """``python -m services.render_worker.reconciler``: one reconciler process."""
    settings = load_settings()
    config = load_config(settings)
    configure_logging("render-reconciler", settings.log_level)
    # One answer per settlement call: a pass must not stall on an outage it revisits anyway.
    ctx = build_context(settings, config, f"reconciler@{socket.gethostname()}#{os.getpid()}",
                        credits_retry_seconds=0)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    for collector in queue_collectors(ctx.db):
        register_collector(collector)
    serve_metrics("reconciler")
    log.info("render reconciler: a pass every %s s", config.reconcile_seconds)
    Reconciler(ctx).run(stop)


if __name__ == "__main__":
    main()
