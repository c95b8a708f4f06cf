"""The cancel signal: how a running job's cancel reaches its worker at once.

The job row's ``cancel_requested`` is the truth. Whoever sets it on a running job also sets
``render:cancel:<job id>`` in Redis (best effort), which the worker reads twice a second for
a fraction of a database read; the worker still reads the row now and then
(``services.render_worker.pipeline``), so a signal Redis did not take is late, not lost.
"""
from __future__ import annotations

import logging

import redis

log = logging.getLogger(__name__)

PREFIX = "render:cancel:"
TTL_SECONDS = 24 * 3600  # beyond any job's deadline


def send(client: redis.Redis, job_id: str) -> None:
    try:
        client.set(PREFIX + job_id, "1", ex=TTL_SECONDS)
    except redis.RedisError as exc:
        log.warning("job %s: cancel signal not sent (%s); its worker reads the request from the database",
                    job_id, exc)


def received(client: redis.Redis, job_id: str) -> bool:
    """Whether the job's cancel was signalled; RedisError when Redis does not answer."""
    return bool(client.exists(PREFIX + job_id))
