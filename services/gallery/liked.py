"""Which works each user likes, kept in Redis by the gallery for the gateway to read.

The contract (docs/architecture.md, Redis keys):

``gallery:liked:<user id>``: a set of the ids of the works the user likes (the ``work_likes``
rows), plus the member ``0`` (no work has that id), which says the set is complete. A set
without it is missing: never built, expired, or lost with Redis. A reader then asks the
gallery (``GET /internal/users/<id>/liked``), which answers from the database and rebuilds
the set. It expires ``TTL_SECONDS`` after its last rebuild, so idle users cost nothing and a
change Redis missed (below) is forgotten by then.

``gallery:liked:<user id>:version``: moved by every change of the user's likes and at the start
of every rebuild. A rebuild writes the set only if the version is still the one it took before
reading the database, so a like committing during a rebuild is never lost: either the
rebuild's read saw it, or the like moved the version and the rebuild gives up, or the rebuild
wrote first and the like then added itself to the set.

Changes reach Redis after their transaction commits, and only sets that exist are changed
(one script, atomic with the check). If Redis cannot be reached then, the change is logged and
the set may be wrong until it expires.
"""
from __future__ import annotations

import logging
from typing import Callable

import redis
from sqlalchemy.orm import Session

from shared.db import after_commit

log = logging.getLogger(__name__)

TTL_SECONDS = 3600
COMPLETE = "0"  # the member every complete set holds

# KEYS: set, version. ARGV: ttl, "1" add / "0" remove / "" drop the set, work ids...
_CHANGE = """
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
elseif redis.call('EXISTS', KEYS[1]) == 1 then
  for i = 3, #ARGV, 1000 do
    local last = math.min(i + 999, #ARGV)
    if ARGV[2] == '1' then redis.call('SADD', KEYS[1], unpack(ARGV, i, last))
    else redis.call('SREM', KEYS[1], unpack(ARGV, i, last)) end
  end
end
return 1
"""

# KEYS: set, version. ARGV: the version the rebuild took, ttl, "0", work ids...
_WRITE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
for i = 3, #ARGV, 1000 do
  redis.call('SADD', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


def liked_key(user_id: int) -> str:
    return f"gallery:liked:{user_id}"


def version_key(user_id: int) -> str:
    return f"gallery:liked:{user_id}:version"


def read_liked(client: redis.Redis, user_id: int, work_ids: list[int]) -> set[int] | None:
    """Which of ``work_ids`` the user likes, from the set (one SMISMEMBER); None when the set
    is missing. Redis errors are the caller's."""
    return liked_from(work_ids, client.smismember(liked_key(user_id), liked_members(work_ids)))


def liked_members(work_ids: list[int]) -> list:
    """What ``read_liked`` asks the set about (a caller with other commands to send may put the
    SMISMEMBER in their pipeline and read its answer with ``liked_from``)."""
    return [COMPLETE, *work_ids]


def liked_from(work_ids: list[int], flags: list) -> set[int] | None:
    """The liked ``work_ids``, from the SMISMEMBER of ``liked_members``; None when the set is missing."""
    if not flags[0]:
        return None
    return {work_id for work_id, flag in zip(work_ids, flags[1:]) if flag}


class LikedSets:
    """The gallery's side: keeps the sets true to ``work_likes`` and rebuilds missing ones."""

    def __init__(self, client: redis.Redis, ttl_seconds: int = TTL_SECONDS) -> None:
        self.redis = client
        self.ttl = ttl_seconds
        self._change = client.register_script(_CHANGE)
        self._write = client.register_script(_WRITE)

    def changed_after_commit(self, session: Session, user_id: int, work_ids: list[int], liked: bool | None) -> None:
        """Once ``session`` commits: the user now likes (True) or no longer likes (False)
        ``work_ids``; None: drop the user's set (their likes are gone)."""
        after_commit(session, lambda: self._apply(user_id, work_ids, liked))

    def _apply(self, user_id: int, work_ids: list[int], liked: bool | None) -> None:
        mode = "" if liked is None else "1" if liked else "0"
        try:
            self._change(keys=[liked_key(user_id), version_key(user_id)], args=[self.ttl, mode, *work_ids])
        except redis.RedisError as exc:
            log.error("likes of user %s changed (%s) but Redis was not told (%s); their set may be stale "
                      "for up to %s s", user_id, work_ids, exc.__class__.__name__, self.ttl)

    def forget(self, user_ids: range) -> None:
        """Drop these users' sets: their likes were written around the gallery (the demo seed)."""
        pipe = self.redis.pipeline(transaction=False)
        for user_id in user_ids:
            self._change(keys=[liked_key(user_id), version_key(user_id)], args=[self.ttl, ""], client=pipe)
        pipe.execute()

    def begin_rebuild(self, user_id: int) -> int:
        """Take a version before reading the database (step 1 of ``rebuild``)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.incr(version_key(user_id))
        pipe.expire(version_key(user_id), self.ttl)
        return int(pipe.execute()[0])

    def finish_rebuild(self, user_id: int, version: int, work_ids: list[int]) -> bool:
        """Write the set read from the database, unless a change moved the version since
        ``begin_rebuild`` (step 2); True if written."""
        return bool(self._write(keys=[liked_key(user_id), version_key(user_id)],
                                args=[version, self.ttl, COMPLETE, *work_ids]))

    def rebuild(self, user_id: int, read: Callable[[], list[int]]) -> list[int]:
        """``read()`` (every work the user likes, from the database), written as the user's set
        when nothing changed meanwhile. A Redis failure is logged: the answer stands."""
        try:
            version = self.begin_rebuild(user_id)
        except redis.RedisError as exc:
            log.warning("likes of user %s not cached (%s)", user_id, exc.__class__.__name__)
            return read()
        work_ids = read()
        try:
            self.finish_rebuild(user_id, version, work_ids)
        except redis.RedisError as exc:
            log.warning("likes of user %s not cached (%s)", user_id, exc.__class__.__name__)
        return work_ids
