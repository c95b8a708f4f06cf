"""The edge cache: anonymous public reads answered by the gateway without the hop.

Which requests: ``GET`` without an ``Authorization`` header of a gallery page
(``/api/works/gallery``) or a work's details (``/api/works/<id>``). Only 200 answers are
kept, so a private, hidden or deleted work (404 to an anonymous caller) never enters it.
A signed-in request is answered from the same entries by ``services/gateway/public_reads.py``.

Key: the path and its query parameters sorted (``pageSize=20&sort=newest`` and
``sort=newest&pageSize=20`` share an entry).

Two layers: each gateway process keeps a small dictionary in front of Redis, which all
gateway processes share. An entry carries its body, its ``ETag`` (a digest of the body) and
when it was fetched. A page is served while younger than ``EDGE_CACHE_SECONDS``, with
``Cache-Control: public, max-age=<what is left>``, ``Age`` and ``Vary: Authorization``, and a
matching ``If-None-Match`` gets 304. So its counters (likes, views) lag by at most that long.

A work's details live ``EDGE_DETAIL_SECONDS`` (60 s: a visitor opens any of thousands of
works, few of them twice within a few seconds), and each answer lays the work's current
likes, views and downloads over the kept body. Those come from the hash the gallery writes
as they change (``counters_key``; ``services/gateway/client.py`` says who writes it and
when), read once and then kept by the process until the work is counted again: with the
generation, every ``GENERATION_CHECK_SECONDS``, the process reads which works were counted
since it last looked (``<namespace>:counted``) and forgets their counters; when it cannot
tell (it fell more than ``COUNTED_KEPT`` works behind, or Redis lost them), it forgets all.
So a count shows within ``GENERATION_CHECK_SECONDS``, and a hit costs no Redis round trip.
Such an answer is as of now (``Age: 0``, ``max-age=EDGE_CACHE_SECONDS``, an ``ETag`` of what
is sent). With the hash missing or incomplete the details are fetched again, and the counters
they carry fill the hash's missing fields; a refetch also forgets the process's counters of
the work, so a wrong count (a write Redis missed) lasts at most until the hash expires and the
details are refetched.

Invalidation: services move the generation counter on after a change the public sees
(``services/gateway/client.py``); entries are stored under the generation they were fetched
in, and each process reads the counter at most every ``GENERATION_CHECK_SECONDS``, so a
change shows within that time. If Redis is unreachable the cache steps aside and requests
go to the service. ``gateway_edge_cache_total{result}`` counts the answers: ``hit`` (served
from an entry, in front of Flask or by it), ``miss`` (fetched and kept), ``pass`` (fetched and
not kept: an error, a 404, Redis away).

One fetch per key at a time (striped locks), and an entry in its last fifth of life is
refetched by the first request that sees it while the others are still served from it.
"""
from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable

import orjson
import redis
from flask import Request, Response

from services.gateway.client import COUNTERS, GENERATION_CHECK_SECONDS, counted_keys, counters_key, generation_key
from shared.metrics import Counter
from shared.web import IdConverter

log = logging.getLogger(__name__)
_ANSWERED = Counter("gateway_edge_cache_total", "Anonymous public reads by how the edge cache answered them",
                   ("result",))
ANSWERS = {state: _ANSWERED.labels(state.lower()) for state in ("HIT", "MISS", "PASS")}

CACHED_PATHS = re.compile(rf"/api/works/(?:gallery|{IdConverter.regex})")
DETAIL_PATH = re.compile(rf"/api/works/({IdConverter.regex})(?:\?.*)?", re.DOTALL)  # matched against a key
LOCAL_ENTRIES = 4096
LOCAL_COUNTERS = 65_536  # works whose counters a process keeps
COUNTED_BATCH = 1000  # counted works read per look; more, and the process forgets every work's counters
LOCK_STRIPES = 64
REFRESH_AT = 0.8  # of the lifetime: from then on, one request refetches while the rest are served
REDIS_RETRY_SECONDS = 5.0  # after a Redis failure, how long the cache stays aside


@dataclass(frozen=True)
class Entry:
    generation: int
    fetched_at: float  # Unix seconds (shared by processes through Redis)
    etag: str
    content_type: str
    body: bytes
    live: bool = False  # a work's details with its counters laid over now (never kept as such)

    def pack(self) -> bytes:
        return b"%d\n%.3f\n%s\n%s\n" % (self.generation, self.fetched_at, self.etag.encode(),
                                         self.content_type.encode()) + self.body

    @classmethod
    def unpack(cls, data: bytes) -> Entry:
        generation, fetched_at, etag, content_type, body = data.split(b"\n", 4)
        return cls(int(generation), float(fetched_at), etag.decode(), content_type.decode(), body)


def key_of(path: str, query: str) -> str:
    """The path and its query parameters in sorted order."""
    return path + "?" + "&".join(sorted(query.split("&"))) if query else path


def cache_key(request: Request) -> str:
    return key_of(request.path, request.query_string.decode("latin-1"))


# KEYS: a work's counters. ARGV: ttl, then field, value pairs (only where a field is missing).
_FILL_COUNTERS = """
for i = 2, #ARGV, 2 do redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end
if redis.call('TTL', KEYS[1]) == -1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return 1
"""


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def detail_work_id(key: str) -> int | None:
    """The work whose details ``key`` holds; None for a page."""
    found = DETAIL_PATH.fullmatch(key)
    return int(found.group(1)) if found else None


def with_counters(entry: Entry, counters: dict[str, int]) -> Entry:
    """The details in ``entry`` with these counters, as they are answered now."""
    document = orjson.loads(entry.body)
    document["data"]["work"].update(counters)
    body = orjson.dumps(document)
    return replace(entry, etag=etag_of(body), body=body, live=True)


def counters_in(body: bytes) -> dict[str, int] | None:
    """The counters of the work in a details answer; None if it does not look like one."""
    try:
        work = orjson.loads(body)["data"]["work"]
        counters = {name: work[name] for name in COUNTERS}
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return counters if all(type(value) is int for value in counters.values()) else None


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    return any(candidate.strip().removeprefix("W/") in (etag, "*") for candidate in header.split(","))


class EdgeCache:
    """Anonymous answers by key: the process's own layer in front of Redis."""

    def __init__(self, client: redis.Redis, namespace: str, ttl_seconds: float, detail_seconds: float) -> None:
        self.redis = client
        self.namespace = namespace
        self.ttl = ttl_seconds
        self.detail_ttl = detail_seconds
        self._generation_key = generation_key(namespace)
        self._counted_keys = counted_keys(namespace)
        self._generation = 0
        self._generation_read_at = 0.0
        self._local: dict[str, Entry] = {}
        self._counters: dict[int, dict[str, int]] = {}  # by work id, until the work is counted again
        # By work id: the details entry, the counters laid over it, and the answer they make
        # (parsing, laying over and digesting the body once, not on every hit).
        self._laid_over: dict[int, tuple[Entry, dict[str, int], Entry]] = {}
        self._counted_seen: int | None = None  # the last count this process has looked at
        self._counters_epoch = 0  # moves when counters are forgotten: a read that straddles it is not kept
        self._fill_counters = client.register_script(_FILL_COUNTERS)
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]
        self._aside_until = 0.0

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def handles(self, request: Request) -> bool:
        """A public read this cache answers (signed in or not)."""
        return self.enabled and request.method == "GET" and CACHED_PATHS.fullmatch(request.path) is not None

    def generation(self) -> int | None:
        """The current generation (read from Redis at most every GENERATION_CHECK_SECONDS,
        with the works counted since); None while Redis is unreachable."""
        now = time.monotonic()
        if now < self._aside_until:
            return None
        if now - self._generation_read_at >= GENERATION_CHECK_SECONDS:
            self._generation_read_at = now  # the other threads keep the one they know meanwhile
            try:
                self._generation = self._look()
            except redis.RedisError as exc:
                self._step_aside(exc)
                return None
        return self._generation

    def _look(self) -> int:
        """One round trip: the generation, and the works counted since the last look, whose
        counters are forgotten (all of them when it cannot tell which)."""
        counted, _sequence, floor = self._counted_keys
        seen = self._counted_seen
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self._generation_key)
            pipe.get(floor)
            pipe.zrevrange(counted, 0, 0, withscores=True)
            pipe.zrangebyscore(counted, "+inf" if seen is None else f"({seen}", "+inf", start=0, num=COUNTED_BATCH,
                               withscores=True)
            generation, dropped, last, changed = pipe.execute()
        generation, latest = int(generation or 0), int(last[0][1]) if last else 0
        if (seen is None or latest < seen or int(dropped or 0) > seen or len(changed) >= COUNTED_BATCH
                or generation < self._generation):  # the start, falling behind, or Redis lost its data
            self._counters.clear()
            self._counters_epoch += 1
        elif changed:
            for work_id, _count in changed:
                self._counters.pop(int(work_id), None)
            self._counters_epoch += 1
        self._counted_seen = latest
        return generation

    def get(self, key: str, fetch: Callable[[], Response]) -> tuple[Entry | Response, str]:
        """The fresh entry for ``key`` and whether it was a "HIT" or a "MISS"; on a miss,
        ``fetch()`` answers and a 200 is kept. The upstream's response itself comes back
        ("PASS") when it is not kept (an error, a 404) or Redis is unreachable."""
        found, state = self._get(key, fetch)
        ANSWERS[state].inc()
        return found, state

    def _get(self, key: str, fetch: Callable[[], Response]) -> tuple[Entry | Response, str]:
        generation = self.generation()
        if generation is None:
            return fetch(), "PASS"
        entry = self.fresh(key, generation)
        lock = self._locks[hash(key) % LOCK_STRIPES]
        if entry is not None:
            if not self.ageing(entry) or not lock.acquire(blocking=False):
                return entry, "HIT"
            try:
                return self._fill(key, generation, fetch)
            finally:
                lock.release()
        with lock:
            entry = self.fresh(key, generation)
            return (entry, "HIT") if entry is not None else self._fill(key, generation, fetch)

    def ageing(self, entry: Entry) -> bool:
        """Whether the entry is in the last part of its life, when one request refetches it."""
        return time.time() - entry.fetched_at >= (self.detail_ttl if entry.live else self.ttl) * REFRESH_AT

    def answer(self, entry: Entry, state: str, if_none_match: str | None,
               vary: str = "Authorization") -> tuple[str, list[tuple[str, str]], bytes]:
        """Status line, headers and body answering with ``entry`` (304 when its ETag matches)."""
        age = 0 if entry.live else max(0, int(time.time() - entry.fetched_at))
        headers = [("ETag", entry.etag), ("Cache-Control", f"public, max-age={max(0, int(self.ttl) - age)}"),
                   ("Age", str(age)), ("Vary", vary), ("X-Edge-Cache", state)]
        if etag_matches(if_none_match, entry.etag):
            return "304 Not Modified", headers, b""
        headers += [("Content-Type", entry.content_type), ("Content-Length", str(len(entry.body)))]
        return "200 OK", headers, entry.body

    def respond(self, request: Request, entry: Entry, state: str) -> Response:
        """The entry as a Flask response to ``request``."""
        status, headers, body = self.answer(entry, state, request.headers.get("If-None-Match"))
        return Response(body, status=int(status[:3]), headers=headers)

    def fresh(self, key: str, generation: int) -> Entry | None:
        """The entry of ``key`` in this generation if it is younger than its lifetime; a work's
        details with their counters laid over, None when the counters are not all known."""
        work_id = detail_work_id(key)
        ttl = self.ttl if work_id is None else self.detail_ttl
        now = time.time()
        entry = self._local.get(key)
        if entry is None or entry.generation != generation or now - entry.fetched_at >= ttl:
            try:
                packed = self.redis.get(self._redis_key(key, generation))
            except redis.RedisError as exc:
                self._step_aside(exc)
                return None
            if packed is None:
                return None
            entry = Entry.unpack(packed)
            if now - entry.fetched_at >= ttl:
                return None
            self._remember(key, entry)
        if work_id is None:
            return entry
        counters = self._counters.get(work_id)
        if counters is None:
            epoch = self._counters_epoch
            try:
                values = self.redis.hmget(counters_key(self.namespace, work_id), COUNTERS)
            except redis.RedisError as exc:
                self._step_aside(exc)
                return None
            if None in values:
                return None
            counters = dict(zip(COUNTERS, map(int, values)))
            if epoch == self._counters_epoch:  # else the work may have been counted since the read
                if len(self._counters) >= LOCAL_COUNTERS:
                    self._counters.clear()
                self._counters[work_id] = counters
        return self._with_counters(work_id, entry, counters)

    def _with_counters(self, work_id: int, entry: Entry, counters: dict[str, int]) -> Entry:
        """``with_counters``, kept until the entry or the counters change."""
        kept = self._laid_over.get(work_id)
        if kept is not None and kept[0] is entry and kept[1] == counters:
            return kept[2]
        live = with_counters(entry, counters)
        if len(self._laid_over) >= LOCAL_COUNTERS:
            self._laid_over.clear()
        self._laid_over[work_id] = (entry, counters, live)
        return live

    def _fill(self, key: str, generation: int, fetch: Callable[[], Response]) -> tuple[Entry | Response, str]:
        fetched_at = time.time()
        response = fetch()
        if response.status_code != 200 or response.is_streamed or not response.is_json:
            return response, "PASS"
        body = response.get_data()
        work_id = detail_work_id(key)
        counters = counters_in(body) if work_id is not None else None
        if work_id is not None and counters is None:
            return response, "PASS"
        entry = Entry(generation, fetched_at, etag_of(body), response.content_type, body)
        self._remember(key, entry)
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(self._redis_key(key, generation), entry.pack(),
                         px=int((self.ttl if work_id is None else self.detail_ttl) * 1000))
                if counters is not None:  # only into missing fields: what the gallery wrote meanwhile is newer
                    pairs = [part for item in counters.items() for part in item]
                    self._fill_counters(keys=[counters_key(self.namespace, work_id)],
                                        args=[int(self.detail_ttl), *pairs], client=pipe)
                pipe.execute()
        except redis.RedisError as exc:
            self._step_aside(exc)
        if counters is None:
            return entry, "MISS"
        self._counters.pop(work_id, None)  # the next answer reads the hash again
        return self._with_counters(work_id, entry, counters), "MISS"

    def _remember(self, key: str, entry: Entry) -> None:
        if len(self._local) >= LOCAL_ENTRIES:
            self._local.clear()
        self._local[key] = entry

    def _redis_key(self, key: str, generation: int) -> str:
        return f"{self.namespace}:{generation}:{key}"

    def _step_aside(self, exc: Exception) -> None:
        log.warning("edge cache unavailable for %g s (Redis: %s)", REDIS_RETRY_SECONDS, exc.__class__.__name__)
        self._aside_until = time.monotonic() + REDIS_RETRY_SECONDS
        self._local.clear()
        self._counters.clear()
        self._laid_over.clear()
        self._counted_seen = None
        self._counters_epoch += 1

    def close(self) -> None:
        self.redis.close()
