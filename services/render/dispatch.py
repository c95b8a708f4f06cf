"""Queue names, sending a released job to a worker, and the waiting-time estimate.

Each workflow has a Celery queue ``<RENDER_QUEUE>.<workflow>`` that every worker able to
run it consumes, and each worker its own, ``<RENDER_QUEUE>.worker.<workerId>``. The
scheduler (``services.render.scheduler``) sends every job to the queue of the worker it
chose; the workflow queues carry only jobs a worker passes on.
"""
from __future__ import annotations

from typing import Any

from celery import Celery

from shared.tasks import RENDER_RUN_JOB

from services.render.catalog import workflow_names


def queue_name(base: str, workflow: str) -> str:
    return f"{base}.{workflow}"


def worker_queue(base: str, worker_id: str) -> str:
    return f"{base}.worker.{worker_id}"


def send_job(celery: Celery, queue: str, job_id: str, hops: int = 0, producer: Any = None) -> None:
    """Send ``render.run_job(job_id)`` to ``queue`` (on ``producer``: one for a pass's messages)."""
    celery.send_task(RENDER_RUN_JOB, args=[job_id], kwargs={"hops": hops} if hops else {}, queue=queue,
                     producer=producer)


def capacity(catalogs: list[dict[str, Any]], workflow: str | None = None) -> int:
    """Prompt slots of the live workers (those that run ``workflow`` when it is given)."""
    return sum(int(c.get("slots", 1)) for c in catalogs if workflow is None or workflow in workflow_names(c))


def estimated_start_seconds(position: int, running: int, slots: int, job_seconds: float) -> float | None:
    """Seconds until a job at ``position`` should start, with ``slots`` jobs running at once."""
    if slots <= 0:
        return None
    waves = (position + running) // slots
    return round(waves * job_seconds, 1)
