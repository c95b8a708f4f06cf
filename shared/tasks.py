"""Celery app factory and the names of every task, so services send tasks by name
without importing worker code (senders name the queue; see services.render.dispatch).

The broker is ``BROKER_URL``: Redis (the default, ``REDIS_URL``) or RabbitMQ (``amqp://``).
Nothing the platform sends depends on the broker's kind: the scheduler's waiting lines
(``services.render.scheduler``) live in Redis either way. ``visibility_timeout`` only means
something to the Redis transport; RabbitMQ redelivers when the consumer's channel closes.
"""
from __future__ import annotations

from celery import Celery

from shared.config import Settings

RENDER_RUN_JOB = "render.run_job"


def make_celery(settings: Settings, name: str) -> Celery:
    app = Celery(name, broker=settings.broker_url)
    app.conf.update(
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        # Above the longest job, so an unacknowledged job is redelivered only after its worker died.
        broker_transport_options={"visibility_timeout": settings.job_deadline_seconds + 300},
    )
    return app
