"""The cancel signal: how a running job's cancel reaches its worker at once.

The job row's ``cancel_requested`` is the truth. Whoever sets it on a running job also sets
``render:cancel:<job id>`` in Redis (best effort), which the worker reads twice a second for
a fraction of a database read (``Watch``: one read for all the jobs a worker process runs);
the worker still reads the row now and then (``services.render_worker.pipeline``), so a
signal Redis did not take is late, not lost.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import redis

log = logging.getLogger(__name__)

PREFIX = "render:cancel:"
TTL_SECONDS = 24 * 3600  # beyond any job's deadline
POLL_SECONDS = 0.5  # how old a read of the signals may be


def send(client: redis.Redis, job_id: str) -> None:
    try:
        client.set(PREFIX + job_id, "1", ex=TTL_SECONDS)
    except redis.RedisError as exc:
        log.warning("job %s: cancel signal not sent (%s); its worker reads the request from the database",
                    job_id, exc)


class Watch:
    """The signals of the jobs one worker process runs (two prompts in flight), read together: one
    ``MGET`` of all of them at most every ``interval`` seconds, by whichever job asks first."""

    def __init__(self, client: redis.Redis, interval: float = POLL_SECONDS) -> None:
        self.client = client
        self.interval = interval
        self._lock = threading.Lock()
        self._jobs: set[str] = set()
        self._signalled: set[str] = set()
        self._read_at = float("-inf")

    @contextmanager
    def watching(self, job_id: str) -> Iterator[None]:
        """Read ``job_id``'s signal with the others' while the job runs here. From before its claim:
        a signal set after the claim (which found no cancel on the row) is seen at the next read."""
        with self._lock:
            self._jobs.add(job_id)
        try:
            yield
        finally:
            with self._lock:
                self._jobs.discard(job_id)
                self._signalled.discard(job_id)

    def received(self, job_id: str) -> bool:
        """Whether the cancel of a job ``watching`` was signalled, as read at most ``interval``
        ago; RedisError when Redis does not answer (at most once an interval)."""
        with self._lock:
            now = time.monotonic()
            if now - self._read_at >= self.interval:
                self._read_at = now
                jobs = sorted(self._jobs)
                values = self.client.mget([PREFIX + job for job in jobs])
                self._signalled = {job for job, value in zip(jobs, values) if value is not None}
            return job_id in self._signalled
