"""How other services tell the gateway's edge cache (``services/gateway/cache.py``) that what
the public sees has changed.

The edge cache keeps anonymous gallery pages for ``EDGE_CACHE_SECONDS`` and a work's details
for ``EDGE_DETAIL_SECONDS``. A service whose transaction changes what they show (a work
published, edited, hidden, restored, deleted, featured or reviewed) calls
``changed_after_commit(session)``: once the transaction commits, the cache's generation (one
Redis counter) moves on, and every gateway process stops serving older entries within
``GENERATION_CHECK_SECONDS``.

Counters (likes, views, downloads) do not invalidate. On pages they lag by up to
``EDGE_CACHE_SECONDS``; a work's details show them from ``<namespace>:counters:<work id>``,
a Redis hash the gallery writes with ``set_counters`` inside the transaction that changed
them, after the change and while the work's row is locked, so two changes reach Redis in the
order they commit. The gateway adds the counters it fetched with a work's details only where
a field is missing (HSETNX), so it never writes over a newer value. The hash expires
``EDGE_DETAIL_SECONDS`` after it was made, which bounds what can go wrong: a transaction rolled
back after its write, a write Redis missed.
"""
from __future__ import annotations

import logging

import redis
from sqlalchemy.orm import Session

from shared.db import after_commit

log = logging.getLogger(__name__)

# How often a gateway process reads the generation (so how soon an invalidation takes effect).
GENERATION_CHECK_SECONDS = 0.1
COUNTERS = ("likes", "views", "downloads")  # a work's fields the details show from its counters hash


def generation_key(namespace: str) -> str:
    return f"{namespace}:generation"


def counters_key(namespace: str, work_id: int) -> str:
    return f"{namespace}:counters:{work_id}"


class EdgeCacheClient:
    def __init__(self, client: redis.Redis, namespace: str, detail_seconds: int) -> None:
        self.redis = client
        self.namespace = namespace
        self.key = generation_key(namespace)
        self.detail_seconds = detail_seconds

    def public_changed(self) -> None:
        """Retire every cached public answer. A failure is logged, not raised: the change has
        committed, and cached answers still expire after their lifetime."""
        try:
            self.redis.incr(self.key)
        except redis.RedisError as exc:
            log.warning("the edge cache was not told of a public change (%s); it catches up within its lifetime",
                        exc.__class__.__name__)

    def changed_after_commit(self, session: Session) -> None:
        """Call ``public_changed`` once, after ``session``'s transaction commits."""
        if not session.info.get("edge_cache_changed"):
            session.info["edge_cache_changed"] = True
            after_commit(session, self.public_changed)

    def set_counters(self, work_id: int, **counters: int) -> None:
        """Write a work's current counters (``COUNTERS``) for its cached details. Called in the
        transaction that changed them, with the work's row locked and nothing left to do but
        commit. A failure is logged, not raised: the counters then lag until the hash expires."""
        key = counters_key(self.namespace, work_id)
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(key, mapping=counters)
                pipe.expire(key, self.detail_seconds, nx=True)
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("counters of work %s not written to the edge cache (%s); they lag until it forgets them",
                        work_id, exc.__class__.__name__)
