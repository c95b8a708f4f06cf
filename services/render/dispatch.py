"""Queue names, sending a released job to a worker, and the waiting-time estimate.

Each workflow has a Celery queue ``<RENDER_QUEUE>.<workflow>`` that every worker able to
run it consumes, and each worker its own, ``<RENDER_QUEUE>.worker.<workerId>``. The
scheduler (``services.render.scheduler``) sends every job to the queue of the worker it
chose. Workers still consume the workflow queues, so messages sent there before the
scheduler existed are not lost on an upgrade; nothing sends there now.
"""
from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from shared.tasks import RENDER_RUN_JOB

from services.render.catalog import workflow_names


def queue_name(base: str, workflow: str) -> str:
    return f"{base}.{workflow}"


# A worker's own queue is gone this long after its last consumer left (RabbitMQ's
# ``x-expires``): worker ids are new on every start, so queues of past starts must not pile up.
# A job released there unclaimed is taken back by the scheduler long before. On Redis kombu
# gives the list this expiry with each message sent, and the scheduler gives it to the list of
# a message kombu put back into a dead worker's queue (``expire_queues_of_gone_workers``).
WORKER_QUEUE_EXPIRES_SECONDS = 3600


def worker_queue(base: str, worker_id: str) -> str:
    return f"{base}.worker.{worker_id}"


def declare_worker_queue(celery: Celery, base: str, worker_id: str) -> str:
    """Register a worker's own queue with its expiry in ``celery``'s routing table (the worker
    consuming it and the scheduler sending to it must declare it alike); returns its name."""
    name = worker_queue(base, worker_id)
    if name not in celery.amqp.queues:
        celery.amqp.queues.add(Queue(name, Exchange(name, type="direct"), routing_key=name,
                                     queue_arguments={"x-expires": WORKER_QUEUE_EXPIRES_SECONDS * 1000}))
    return name


def send_job(celery: Celery, queue: str, job_id: str, hops: int = 0, producer: Any = None,
             declared: bool = False) -> None:
    """Send ``render.run_job(job_id)`` to ``queue`` (on ``producer``: one for a pass's messages).
    ``declared``: the sender declared the queue on the broker already; else Celery declares it
    with every message (kombu never caches the declaration of a queue with ``x-expires``)."""
    celery.send_task(RENDER_RUN_JOB, args=[job_id], kwargs={"hops": hops} if hops else {}, queue=queue,
                     producer=producer, **({"declare": []} if declared else {}))


def capacity(catalogs: list[dict[str, Any]], workflow: str | None = None) -> int:
    """Prompt slots of the live workers (those that run ``workflow`` when it is given)."""
    return sum(int(c.get("slots", 1)) for c in catalogs if workflow is None or workflow in workflow_names(c))


def estimated_start_seconds(position: int, running: int, slots: int, job_seconds: float) -> float | None:
    """Seconds until a job at ``position`` should start, with ``slots`` jobs running at once."""
    if slots <= 0:
        return None
    waves = (position + running) // slots
    return round(waves * job_seconds, 1)
