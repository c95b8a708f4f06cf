"""Celery app factory and the names of every task, so services send tasks by name
without importing worker code (senders name the queue; see services.render.dispatch).

The broker is ``BROKER_URL``: Redis (the default, ``REDIS_URL``) or RabbitMQ (``amqp://``).
Nothing the platform sends depends on the broker's kind: the scheduler's waiting lines
(``services.render.scheduler``) live in Redis either way. ``visibility_timeout`` only means
something to the Redis transport; RabbitMQ redelivers when the consumer's channel closes.
On Redis the transport is ``RedisTransport``: kombu's, reporting a lost connection as one.
"""
from __future__ import annotations

import redis
from celery import Celery
from kombu.transport import redis as kombu_redis

from shared.config import Settings

RENDER_RUN_JOB = "render.run_job"


class RedisChannel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict:
        if self.connection.client is None:  # the connection dropped this channel's transport
            raise redis.exceptions.ConnectionError("the broker connection this channel belonged to was closed")
        return super()._connparams(asynchronous)


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport, which reports a channel used after its connection was closed as
    the lost connection it is.

    When Redis goes away, Celery collects the worker's dead connection (kombu drops its
    transport) and then closes it. If a BRPOP was in flight (the worker had a free slot), the
    first close of the consuming channel stopped short, so the second one restores the
    unacknowledged messages anew; and a task that ends after the reconnect acknowledges on the
    channel that died. Both read the connection's parameters from the dropped transport, and
    kombu's ``AttributeError`` ('NoneType' object has no attribute 'hostname') is no error Celery
    expects: the worker died with "Unrecoverable error" (kombu #582, #970). As a connection
    error, Celery reconnects, and the acknowledgement is logged as lost: Redis redelivers the
    message after the visibility timeout, and its job's claim skips it."""

    Channel = RedisChannel


def broker_transport(broker_url: str) -> str | None:
    """The kombu transport for ``broker_url``: ``RedisTransport`` for Redis, None (kombu's
    choice by the URL's scheme) for RabbitMQ."""
    if broker_url.split("://", 1)[0] in ("redis", "rediss"):
        return f"{__name__}:RedisTransport"
    return None


def make_celery(settings: Settings, name: str) -> Celery:
    app = Celery(name, broker=settings.broker_url)
    app.conf.update(
        broker_transport=broker_transport(settings.broker_url),
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
