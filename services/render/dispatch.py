"""Sending render jobs to the right queue, and telling waiting users where they stand.

Each workflow has its own Celery queue, ``<RENDER_QUEUE>.<workflow>``; a worker consumes
only the queues of the workflows its ComfyUI can run, so a job never reaches a worker
that cannot run it. Next to each message the sender writes ``render:msg:<jobId>``: when
Redis loses its data (a restart without persistence) both vanish together, and the
reconciler re-sends every queued job whose marker is gone.
"""
from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Celery
from sqlalchemy.orm import Session

from shared.events import EventBus
from shared.tasks import RENDER_RUN_JOB

from services.render import jobs
from services.render.catalog import read_live_catalogs, workflow_names

log = logging.getLogger(__name__)

MARKER_PREFIX = "render:msg:"
MARKER_TTL_SECONDS = 7 * 24 * 3600
POSITION_UPDATES_LIMIT = 100


def queue_name(base: str, workflow: str) -> str:
    return f"{base}.{workflow}"


def send_job(celery: Celery, redis_client: redis.Redis, queue: str, job_id: str, hops: int = 0) -> None:
    """Mark, then send ``render.run_job(job_id)`` to ``queue``."""
    redis_client.set(MARKER_PREFIX + job_id, queue, ex=MARKER_TTL_SECONDS)
    celery.send_task(RENDER_RUN_JOB, args=[job_id], kwargs={"hops": hops} if hops else {}, queue=queue)


def message_marked(redis_client: redis.Redis, job_id: str) -> bool:
    return bool(redis_client.exists(MARKER_PREFIX + job_id))


def clear_marker(redis_client: redis.Redis, job_id: str) -> None:
    redis_client.delete(MARKER_PREFIX + job_id)


def capacity(catalogs: list[dict[str, Any]], workflow: str) -> int:
    """Prompt slots of the live workers that run ``workflow``."""
    return sum(int(c.get("slots", 1)) for c in catalogs if workflow in workflow_names(c))


def estimated_start_seconds(position: int, running: int, slots: int, job_seconds: float) -> float | None:
    """Seconds until a job at ``position`` should start, with ``slots`` jobs running at once."""
    if slots <= 0:
        return None
    waves = (position + running) // slots
    return round(waves * job_seconds, 1)


def publish_positions(session: Session, events: EventBus, queue: str, workflow: str, job_seconds: float) -> None:
    """Tell the owners of the first queued jobs of ``queue`` their place in line."""
    waiting = jobs.queued_jobs(session, queue, POSITION_UPDATES_LIMIT)
    if not waiting:
        return
    running = jobs.running_count(session, queue)
    slots = capacity(read_live_catalogs(events.redis), workflow)
    for position, job in enumerate(waiting):
        events.publish(job.user_id, "job.position", {
            "jobId": job.id, "position": position,
            "estimatedStartSeconds": estimated_start_seconds(position, running, slots, job_seconds)})
