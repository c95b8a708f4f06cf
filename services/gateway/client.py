"""How other services tell the gateway's edge cache (``services/gateway/cache.py``) that what
the public sees has changed.

The edge cache keeps anonymous public reads for at most ``EDGE_CACHE_SECONDS``. A service
whose transaction changes what they show (a work published, edited, hidden, restored,
deleted or featured) calls ``changed_after_commit(session)``: once the transaction commits,
the cache's generation (one Redis counter) moves on, and every gateway process stops
serving older entries within ``GENERATION_CHECK_SECONDS``. Counters (likes, views) do not
invalidate: they may lag by up to ``EDGE_CACHE_SECONDS``.
"""
from __future__ import annotations

import logging

import redis
from sqlalchemy.orm import Session

from shared.db import after_commit

log = logging.getLogger(__name__)

# How often a gateway process reads the generation (so how soon an invalidation takes effect).
GENERATION_CHECK_SECONDS = 0.1


def generation_key(namespace: str) -> str:
    return f"{namespace}:generation"


class EdgeCacheClient:
    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.redis = client
        self.key = generation_key(namespace)

    def public_changed(self) -> None:
        """Retire every cached public answer. A failure is logged, not raised: the change has
        committed, and cached answers still expire after ``EDGE_CACHE_SECONDS``."""
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
