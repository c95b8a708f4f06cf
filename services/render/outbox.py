"""What a finished job still owes once its final state is recorded: the settlement of its
credits and the announcement of its outcome. Both are recorded on the job row
(``settled_at``, ``announced_at``); a finished job without them is the outbox the
reconciler empties, so a credits or Redis outage delays them but never loses them.

Settlement: one call once the job has finished (``settle:<job>``) charges its delivered
images (its output rows) and releases the rest of the hold, in one credits transaction.
Until then the whole price stays held: nothing is charged image by image, so delivering an
image waits for no credits call, and a job costs credits two calls (its hold and its
settlement). A retry, a second settler (the worker and the reconciler) or a replay after a
crash therefore moves credits once. A call credits does not answer (no connection, a
timeout, a 5xx) is retried with back-off for ``retry_seconds``; a refusal (the hold was
closed with the user's account, or swept after expiring) cannot be retried into success: it
is logged and the settlement is recorded without that movement.

Announcement: the final event (``job.succeeded``, ``job.failed``, ``job.cancelled``) is built
from the row, so whoever sends it sends the same figures: ``images`` delivered, ``charged``
(images × price), ``refunded`` (the rest of the hold) and ``settled`` (false while credits
has not taken them yet). A failed job also rings the user's bell (deduplicated, best effort).
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import datetime
from typing import Any, Callable

import redis
from sqlalchemy.orm import Session

from services.credits.client import CreditsClient
from services.gallery.client import GalleryClient
from services.render import jobs
from services.render.jobs import FinishedJob
from shared.db import Database, utcnow
from shared.errors import ServiceError
from shared.events import EventBus

log = logging.getLogger(__name__)

FIRST_DELAY_SECONDS = 0.25
MAX_DELAY_SECONDS = 4.0
FINAL_EVENTS = {"succeeded": "job.succeeded", "failed": "job.failed", "cancelled": "job.cancelled"}


def settle_key(job_id: str) -> str:
    return f"settle:{job_id}"


class CreditsUnanswered(Exception):
    """Credits did not answer within the retry budget; the settlement is left for later."""


def _transient(exc: ServiceError) -> bool:
    """Worth asking again: credits is failing or busy, or does not know the route yet (a 404
    without a hold's own code: an older credits during a rolling upgrade, where a refusal
    would mark the job settled and its images would never be charged)."""
    return exc.status >= 500 or exc.status == 429 or (exc.status == 404 and exc.code == "NOT_FOUND")


def final_event(job: FinishedJob, settled: bool) -> tuple[str, dict[str, Any]]:
    """The type and data of a finished job's final event."""
    data: dict[str, Any] = {"jobId": job.id, "images": job.images_delivered, "charged": job.charged,
                            "refunded": job.refunded, "settled": settled}
    if job.status == "failed":
        data = {**data, "errorCode": job.error_code, "errorClass": job.error_class, "message": job.error_message}
    return FINAL_EVENTS[job.status], data


class JobOutbox:
    def __init__(self, db: Database, credits: CreditsClient, events: EventBus, gallery: GalleryClient,
                 retry_seconds: float) -> None:
        self.db = db
        self.credits = credits
        self.events = events
        self.gallery = gallery
        self.retry_seconds = retry_seconds

    def complete(self, job_id: str, finished: FinishedJob | None = None) -> FinishedJob:
        """Settle a job that just finished, announce it (settled or not), then record both in one
        transaction; the job as recorded. ``finished`` is the job as the transaction that finished it
        read it (``read_finished``); without it, it is read here.
        A crash before the record leaves both owed: the settlement repeats under its key (credits
        move once) and the final event may be sent twice, as after any crash after a publish."""
        job = finished or self._finished(job_id)
        settled = self._settle(job)
        announced = self._announce(job, settled or job.settled_at is not None)
        if settled or announced:
            now = utcnow()
            with self.db.transaction() as session:
                if not (settled and announced and jobs.mark_settled_and_announced(session, job_id, now)):
                    if settled:  # one of them only, or one was recorded meanwhile (the reconciler)
                        jobs.mark_settled(session, job_id, now)
                    if announced:
                        jobs.mark_announced(session, job_id, now)
            job = replace(job, settled_at=now if settled else job.settled_at,
                          announced_at=now if announced else job.announced_at)
        if announced:
            self._notify(job)
        return job

    def settle(self, job_id: str) -> bool:
        """Charge every delivered image, release the rest of the hold and record the settlement;
        False when credits did not answer (the job stays unsettled)."""
        job = self._finished(job_id)
        if not self._settle(job):
            return False
        self._mark(jobs.mark_settled, job_id)
        return True

    def announce(self, job_id: str) -> bool:
        """Publish the final event and record it; False when Redis did not take it (the reconciler
        announces it later)."""
        job = self._finished(job_id)
        if not self._announce(job, job.settled_at is not None):
            return False
        self._mark(jobs.mark_announced, job_id)
        self._notify(job)
        return True

    def _mark(self, mark: Callable[..., bool], job_id: str) -> datetime:
        """Record ``mark`` (settled or announced) on the row; when it was recorded."""
        now = utcnow()
        with self.db.transaction() as session:
            mark(session, job_id, now)
        return now

    def _settle(self, job: FinishedJob) -> bool:
        """The settlement's one credits call; False when credits did not answer."""
        try:
            self._call(f"settlement of job {job.id}",
                       lambda: self.credits.settle(job.id, settle_key(job.id), job.images_delivered),
                       time.monotonic() + self.retry_seconds)
        except CreditsUnanswered as exc:
            log.warning("job %s: credits not settled (%s); the reconciler will settle it", job.id, exc)
            return False
        return True

    def _announce(self, job: FinishedJob, settled: bool) -> bool:
        """Publish the final event; False when Redis did not take it."""
        event_type, data = final_event(job, settled)
        try:
            self.events.publish(job.user_id, event_type, data, job_id=job.id)
        except redis.RedisError as exc:
            log.warning("job %s: %s not published (%s); the reconciler will announce it", job.id, event_type, exc)
            return False
        return True

    def _notify(self, job: FinishedJob) -> None:
        """A failed job also rings the user's bell (deduplicated, best effort)."""
        if job.status == "failed":
            self.gallery.notify(job.user_id, "job.failed", "生成失败 / Generation failed", job.error_message or "",
                                {"jobId": job.id, "errorCode": job.error_code, "refunded": job.refunded},
                                dedupe_key=f"job.failed:{job.id}")

    def _finished(self, job_id: str) -> FinishedJob:
        with self.db.read() as session:
            return self.read_finished(session, job_id)

    @staticmethod
    def read_finished(session: Session, job_id: str) -> FinishedJob:
        """The finished job (what its settlement and final event read), read in ``session`` (the
        transaction that finished it can read it for ``complete``)."""
        finished = jobs.finished_job(session, job_id)
        if finished is None:
            raise ValueError(f"job {job_id} is not finished; only a finished job is settled or announced")
        return finished

    @staticmethod
    def _call(what: str, call: Callable[[], dict[str, Any]], give_up_at: float) -> dict[str, Any] | None:
        """``call()`` retried with back-off until ``give_up_at`` (a ``time.monotonic()`` value);
        None when credits refused it, CreditsUnanswered when it never answered."""
        delay = FIRST_DELAY_SECONDS
        while True:
            try:
                return call()
            except ServiceError as exc:
                if not _transient(exc):
                    log.error("credits refused the %s: %s %s", what, exc.code, exc.message)
                    return None
                if time.monotonic() + delay > give_up_at:
                    raise CreditsUnanswered(f"{what}: {exc.code} {exc.message}") from exc
                time.sleep(delay)
                delay = min(delay * 2, MAX_DELAY_SECONDS)
