"""How other services tell the gateway's edge cache (``services/gateway/cache.py``) that what
the public sees has changed.

The edge cache keeps anonymous gallery pages for ``EDGE_CACHE_SECONDS`` and a work's details
for ``EDGE_DETAIL_SECONDS``. A service whose transaction changes what they show (a work
published, edited, hidden, restored, deleted, featured or reviewed) calls
``changed_after_commit(session)``: once the transaction commits, the cache's generation (one
Redis counter) moves on, and every gateway process stops serving older entries within
``GENERATION_CHECK_SECONDS``.

Counters (likes, views, downloads) do not invalidate. On pages they lag by up to
``EDGE_CACHE_SECONDS``. A work's details show them from ``<namespace>:counters:<work id>``, a
hash the gallery writes with ``set_counters`` in the transaction that changed them, after the
change and while the work's row is locked, so two changes reach Redis in the order they
commit. The same script numbers the change (``<namespace>:counted:seq``) and files the work
under that number in ``<namespace>:counted`` (a sorted set of the last ``COUNTED_KEPT``
works changed; ``<namespace>:counted:floor`` is the highest number dropped from it), where
each gateway process looks, with the generation, for the works whose counters it must read
again. The gateway adds the counters it fetched with a work's details only where a field is
missing (HSETNX), so it never writes over a newer value. The hash expires
``EDGE_DETAIL_SECONDS`` after it was made, and a gateway process reads it again whenever it
fetches the details again (at most that long apart), which bounds what can go wrong (a
transaction rolled back after its write, a write Redis missed) to about twice that.
"""
from __future__ import annotations

import logging

import redis
from sqlalchemy.orm import Session

from shared.db import after_commit

log = logging.getLogger(__name__)

# How often a gateway process reads the generation and the works counted since it last
# looked (so how soon an invalidation or a new count shows).
GENERATION_CHECK_SECONDS = 0.1
COUNTERS = ("likes", "views", "downloads")  # a work's fields the details show from its counters hash
COUNTED_KEPT = 10_000  # works in <namespace>:counted; a process that fell further behind reads every work again

# KEYS: the work's counters, counted, counted:seq, counted:floor.
# ARGV: ttl, work id, COUNTED_KEPT, then field, value pairs.
_SET_COUNTERS = """
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if redis.call('TTL', KEYS[1]) == -1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[2])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if excess > 0 then
  local dropped = redis.call('ZRANGE', KEYS[2], excess - 1, excess - 1, 'WITHSCORES')
  redis.call('SET', KEYS[4], dropped[2])
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
end
return 1
"""


def generation_key(namespace: str) -> str:
    return f"{namespace}:generation"


def counters_key(namespace: str, work_id: int) -> str:
    return f"{namespace}:counters:{work_id}"


def counted_keys(namespace: str) -> tuple[str, str, str]:
    """The sorted set of works counted lately, its sequence, and its floor."""
    return f"{namespace}:counted", f"{namespace}:counted:seq", f"{namespace}:counted:floor"


class EdgeCacheClient:
    def __init__(self, client: redis.Redis, namespace: str, detail_seconds: int) -> None:
        self.redis = client
        self.namespace = namespace
        self.key = generation_key(namespace)
        self.detail_seconds = detail_seconds
        self._set_counters = client.register_script(_SET_COUNTERS)

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
        commit. A failure is logged, not raised: the counters then lag until the hash expires
        and the gateway fetches the details again."""
        pairs = [part for name, value in counters.items() for part in (name, value)]
        try:
            self._set_counters(keys=[counters_key(self.namespace, work_id), *counted_keys(self.namespace)],
                               args=[self.detail_seconds, work_id, COUNTED_KEPT, *pairs])
        except redis.RedisError as exc:
            log.warning("counters of work %s not written to the edge cache (%s); they lag until it forgets them",
                        work_id, exc.__class__.__name__)
