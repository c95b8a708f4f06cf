"""The render domain's Prometheus metrics (mechanism: ``shared/metrics.py``).

Counted where the events happen: a job's outcome where it is finished (the worker, the
reconciler, the API's cancel of a queued job), its durations from its timing breakdown
(``RenderJob``: queued → picked → submitted → first progress → last image → settled).
Queue depth and the oldest queued job's age are read from the database at scrape time by
the reconciler (``queue_collector``): the jobs table is the truth, the broker only a hint.
"""
from __future__ import annotations

from datetime import datetime
from typing import Iterable

from sqlalchemy import func, select

from services.render.jobs import ClaimedJob, FinishedJob
from services.render.models import RenderJob
from shared.db import Database, isoformat, utcnow
from shared.metrics import Counter, Gauge, GaugeCollector, Histogram

# Seconds: a few-step preview to a long video.
DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200)
OVERHEAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)

JOBS = Counter("render_jobs_total", "Render jobs finished, by workflow, outcome and error code",
               ("workflow", "outcome", "error_code"))
RENDER_SECONDS = Histogram("render_seconds", "ComfyUI time of a job: submitted to last image",
                           ("workflow",), buckets=DURATION_BUCKETS)
QUEUE_WAIT = Histogram("render_queue_wait_seconds", "Time a job waited in its queue: queued to picked",
                       ("workflow",), buckets=DURATION_BUCKETS)
OVERHEAD = Histogram("render_overhead_seconds",
                     "Platform time of a job beyond ComfyUI's: picked to settled minus submitted to last image",
                     ("workflow",), buckets=OVERHEAD_BUCKETS)
SCHEDULER_RELEASED = Counter("render_scheduler_released_total", "Jobs the scheduler released to workers, by lane",
                             ("lane",))
SCHEDULER_TAKEN_BACK = Counter("render_scheduler_taken_back_total",
                               "Jobs released to a worker that died, drained or lost the message, put back in line")
SCHEDULER_WAITING = Gauge("render_scheduler_waiting", "Jobs waiting in the scheduler's lines, by lane", ("lane",),
                          multiprocess_mode="livemax")
SCHEDULER_LEADING = Gauge("render_scheduler_leading", "Whether this scheduler holds the lease (1) or stands by (0)",
                          multiprocess_mode="livemax")
COMFYUI_UP = Gauge("render_comfyui_up", "Whether this worker's ComfyUI answered its last heartbeat (1) or not (0)",
                   ("worker", "comfyui"), multiprocess_mode="livemax")


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else max(0.0, (end - start).total_seconds())


def job_finished(job: RenderJob | ClaimedJob, outcome: str, error_code: str | None) -> None:
    JOBS.labels(job.workflow, outcome, error_code or "").inc()


def job_picked(job: ClaimedJob) -> None:
    wait = _seconds(job.created_at, job.started_at)
    if wait is not None and job.attempts == 1:  # a re-run after a crash did not wait in line again
        QUEUE_WAIT.labels(job.workflow).observe(wait)


def job_settled(job: FinishedJob) -> None:
    """Render seconds and overhead of a job that delivered images and is settled."""
    comfyui = _seconds(job.submitted_at, job.last_image_at)
    if comfyui is not None:
        RENDER_SECONDS.labels(job.workflow).observe(comfyui)
    platform = _seconds(job.started_at, job.settled_at)
    if platform is not None and comfyui is not None:
        OVERHEAD.labels(job.workflow).observe(max(0.0, platform - comfyui))


def timings(job: RenderJob) -> dict[str, str | None]:
    """The breakdown as the admin job view shows it (ISO 8601, UTC)."""
    return {"queuedAt": isoformat(job.created_at), "pickedAt": isoformat(job.started_at),
            "submittedAt": isoformat(job.submitted_at), "firstProgressAt": isoformat(job.first_progress_at),
            "lastImageAt": isoformat(job.last_image_at), "finishedAt": isoformat(job.finished_at),
            "settledAt": isoformat(job.settled_at)}


def queue_collectors(db: Database) -> list[GaugeCollector]:
    """Queued jobs and the oldest one's age per workflow queue, read at scrape time (one query)."""
    def rows() -> list[tuple[str, int, datetime]]:
        with db.read() as session:
            return list(session.execute(
                select(RenderJob.queue, func.count(), func.min(RenderJob.created_at))
                .where(RenderJob.status == "queued").group_by(RenderJob.queue)))

    def depth() -> Iterable[tuple[tuple[str, ...], float]]:
        return [((queue,), float(count)) for queue, count, _ in rows()]

    def oldest() -> Iterable[tuple[tuple[str, ...], float]]:
        now = utcnow()
        return [((queue,), _seconds(first, now) or 0.0) for queue, _, first in rows()]

    return [GaugeCollector("render_queue_depth", "Queued render jobs per workflow queue", ("queue",), depth),
            GaugeCollector("render_queue_oldest_age_seconds", "Age of the oldest queued job per workflow queue",
                           ("queue",), oldest)]
