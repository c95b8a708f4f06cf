"""The Redis event bus: live events for one user, a short replayable stream per job, and
the platform announcements services send each other.

Every user event is ``{"type", "data", "ts"}`` (plus ``"id"``, the job stream entry id, for
job events, and ``"eventId"``, the outcome's own id, for a final event: see ``outcome_id``).
It is published to the user's pub/sub channel (``events:<db>:user:<id>``) for live delivery;
job events are also appended to a capped per-job stream so a client that reconnects can ask
for everything after the last id it saw.

Platform announcements (``user.deleted``, …) go to the stream ``platform:events`` as flat
string fields ``{"type", "ts", …}``. Each interested service reads it through its own
consumer group (``GroupConsumer``), so each sees every announcement once, even one made
while it was down. The final event of a job (``job.succeeded``, ``job.failed``,
``job.cancelled``) is announced there too, in the same Redis script as its job-stream
entry, whoever publishes it: services that must not miss an outcome (the queue API, the
webhooks) read it there rather than from live pub/sub. So is ``credits.low``.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import redis
from redis._parsers import _HiredisParser, _RESP3Parser
from redis.utils import HIREDIS_AVAILABLE

from shared.metrics import serve_metrics
from shared.outage import Outage

log = logging.getLogger(__name__)

JOB_STREAM_MAXLEN = 500
JOB_STREAM_TTL_SECONDS = 24 * 3600
PLATFORM_STREAM = "platform:events"
# Generous: consumer groups read within seconds; the cap only bounds a stream nobody reads.
PLATFORM_STREAM_MAXLEN = 100_000
USER_DELETED = "user.deleted"
# How long an idle XREADGROUP waits: well below redis-py's default 5 s socket timeout, or an idle
# consumer's read would time out (and log an error) instead of returning empty.
CONSUMER_BLOCK_MS = 2000
JOB_OUTCOMES = frozenset({"job.succeeded", "job.failed", "job.cancelled"})
CREDITS_LOW = "credits.low"


# Under the gevent gateway every request and socket in flight may hold a connection at once
# (rate limits, revocation checks; live events share one subscriber, services.gateway.fanout);
# redis-py's default pool of 100 would refuse the 101st.
MAX_CONNECTIONS = 2000


# Clients made here parse replies (and pack commands) in C with hiredis, a dependency for that
# alone: about a sixth less CPU per small command, half or less for a hash or a stream range, a
# quarter less for a pipeline (docs/benchmarks.md, "Redis per job"). Missing, a process stops at start
# rather than run slower on redis-py's Python parser. Not under gevent (the gateway): there the
# hiredis parser's readiness polls (gevent's poll, before every command and pub/sub read) cost
# more than its parsing saves, and redis-py's Python parser, reading with socket timeouts, is cheaper.
if not HIREDIS_AVAILABLE:
    raise ImportError("hiredis is not installed (requirements/runtime.txt pins it): redis-py would parse in Python")


def _parser_class() -> type:
    monkey = sys.modules.get("gevent.monkey")
    return _RESP3Parser if monkey is not None and monkey.is_module_patched("select") else _HiredisParser


def connect(url: str, **options: Any) -> redis.Redis:
    """A Redis client (RESP3, redis-py's default protocol) on the parser that costs this process least."""
    return redis.Redis.from_url(url, parser_class=_parser_class(), **options)


def redis_client(url: str) -> redis.Redis:
    return connect(url, decode_responses=True, health_check_interval=30, max_connections=MAX_CONNECTIONS)


def user_channel(user_id: int, db: int) -> str:
    """A user's live channel. Pub/sub channels belong to the whole Redis server, not to one of its
    databases, so the database number is in the name: deployments (or test runs) that share a
    server in separate databases do not hear each other's users."""
    return f"events:{db}:user:{user_id}"


def redis_db(client: redis.Redis) -> int:
    """The database number a client talks to (0 unless its URL names another)."""
    return int(client.connection_pool.connection_kwargs.get("db") or 0)


def job_stream(job_id: str) -> str:
    return f"events:job:{job_id}"


# A job event in one round trip: appended to the job's stream (KEYS[1]; ARGV[1] the event's
# JSON, ARGV[2] the cap, ARGV[3] the TTL), announced on KEYS[3] when ARGV[5..] holds the
# announcement's fields (ARGV[4] that stream's cap), and published on the user's channel
# (KEYS[2]) with its stream id added; returns the id.
# The id exists only once XADD ran, so the script splices it into the JSON text, which is safe:
# ARGV[1] is always ``json.dumps`` of a non-empty dict (``publish``, the only caller), so its last
# character is the object's closing "}", and a stream id ("<ms>-<seq>") needs no escaping.
# Kept over the alternatives: Redis's cjson would parse every job event on the server and change
# it (numbers cut to 14 digits, so ``ts`` loses its microseconds; [] becomes {}; "/" escaped), and
# building the text in Python would need the id first, a second round trip.
_PUBLISH_JOB_EVENT = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if #ARGV > 4 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, 5))
end
redis.call('PUBLISH', KEYS[2], string.sub(ARGV[1], 1, -2) .. ', "id": "' .. id .. '"}')
return id
"""


class EventBus:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self.db = redis_db(client)
        self._publish_job_event = client.register_script(_PUBLISH_JOB_EVENT)

    def publish(self, user_id: int, event_type: str, data: dict[str, Any],
                job_id: str | None = None) -> dict[str, Any]:
        event: dict[str, Any] = {"type": event_type, "data": data, "ts": time.time()}
        channel = user_channel(user_id, self.db)
        if job_id is None:
            self.redis.publish(channel, json.dumps(event))
            return event
        announcement: list[str] = []
        if event_type in JOB_OUTCOMES:
            event["eventId"] = outcome_id(event_type, job_id)
            fields = _announcement(event_type, userId=str(user_id), jobId=job_id, data=json.dumps(data))
            announcement = [item for pair in fields.items() for item in pair]
        event["id"] = self._publish_job_event(
            keys=[job_stream(job_id), channel, PLATFORM_STREAM],
            args=[json.dumps(event), JOB_STREAM_MAXLEN, JOB_STREAM_TTL_SECONDS, PLATFORM_STREAM_MAXLEN,
                  *announcement])
        return event

    def publish_live(self, events: list[tuple[int, str, dict[str, Any]]]) -> None:
        """Publish live-only events (user id, type, data) in one round trip."""
        if not events:
            return
        pipe = self.redis.pipeline(transaction=False)
        for user_id, event_type, data in events:
            pipe.publish(user_channel(user_id, self.db), json.dumps({"type": event_type, "data": data, "ts": time.time()}))
        pipe.execute()

    def job_events_after(self, job_id: str, last_id: str = "0") -> list[dict[str, Any]]:
        """Events of one job after ``last_id`` (exclusive), oldest first."""
        entries = self.redis.xrange(job_stream(job_id), min=f"({last_id}" if last_id != "0" else "-")
        events = []
        for entry_id, fields in entries:
            event = json.loads(fields["event"])
            event["id"] = entry_id
            events.append(event)
        return events


def outcome_id(event_type: str, job_id: str) -> str:
    """The id of a job's final event, the same however often it is published (``job.succeeded:<job
    id>``): a final event is delivered at least once (the outbox may publish it again after a crash,
    services.render.outbox), and a job has one outcome, so its receivers deduplicate on this id."""
    return f"{event_type}:{job_id}"


def _announcement(event_type: str, **fields: str) -> dict[str, str]:
    ts = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"type": event_type, "ts": ts, **fields}


def announce(client: redis.Redis, event_type: str, **fields: str) -> str:
    """Append one announcement ``{"type", "ts", **fields}`` to ``platform:events``; returns its id."""
    return client.xadd(PLATFORM_STREAM, _announcement(event_type, **fields),
                       maxlen=PLATFORM_STREAM_MAXLEN, approximate=True)


def announce_user_deleted(client: redis.Redis, user_id: int) -> str:
    """Auth deleted a user: credits closes the account, the gallery removes works and files."""
    return announce(client, USER_DELETED, userId=str(user_id))


def announce_credits_low(client: redis.Redis, user_id: int, available: int, threshold: int) -> str:
    """A movement took the user's available credits below ``threshold``."""
    return announce(client, CREDITS_LOW, userId=str(user_id),
                    data=json.dumps({"available": available, "threshold": threshold}))


@dataclass(frozen=True)
class Announcement:
    """A job outcome or ``credits.low`` read from ``platform:events``."""

    type: str
    user_id: int
    job_id: str | None
    data: dict[str, Any]
    ts: str


def user_announcement(fields: dict[str, str]) -> Announcement | None:
    """The job outcome or ``credits.low`` in an entry; None for any other entry (a malformed
    one is logged and skipped)."""
    kind = fields.get("type")
    if kind not in JOB_OUTCOMES and kind != CREDITS_LOW:
        return None
    try:
        data = json.loads(fields["data"])
        if not isinstance(data, dict):
            raise ValueError("data is not an object")
        return Announcement(kind, int(fields["userId"]), fields.get("jobId"), data, fields.get("ts", ""))
    except (KeyError, ValueError) as exc:
        log.error("%s announcement is malformed (%s): %r; skipped", kind, exc, fields)
        return None


def deleted_user_id(fields: dict[str, str]) -> int | None:
    """The user id of a ``user.deleted`` announcement; None for any other entry (a malformed
    one is logged and skipped: retrying it could never succeed)."""
    if fields.get("type") != USER_DELETED:
        return None
    try:
        return int(fields["userId"])
    except (KeyError, ValueError):
        log.error("user.deleted without a valid userId: %r; skipped", fields)
        return None


def on_user_deleted(remove: Callable[[int], None]) -> Callable[[dict[str, str]], None]:
    """A platform-stream handler that calls ``remove(user id)`` for each ``user.deleted`` and
    ignores every other announcement."""
    def handle(fields: dict[str, str]) -> None:
        user_id = deleted_user_id(fields)
        if user_id is not None:
            remove(user_id)
    return handle


def ensure_group(client: redis.Redis, group: str, stream: str = PLATFORM_STREAM) -> None:
    """Create the consumer group if missing, reading from the start of the stream, so
    announcements made before the consumer's first run still apply."""
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class RetryLater(Exception):
    """Raised by a handler whose entry cannot be handled yet (it waits on something that ends
    by itself): the entry stays pending and is handled again on a later pass, logged without alarm."""


@dataclass
class GroupConsumer:
    """One named consumer of a consumer group: hands each entry's fields to ``handle`` and
    acknowledges the entry only once ``handle`` returned.

    ``handle`` must be idempotent: an entry whose handling failed or was cut short by a
    crash stays pending and is handled again, by this consumer on its next pass, or by any
    consumer of the group once it has been idle for ``claim_idle_ms`` (consumer names
    usually carry a pid, so a restarted process would otherwise never see it again).
    """

    client: redis.Redis
    group: str
    name: str
    handle: Callable[[dict[str, str]], None]
    stream: str = PLATFORM_STREAM
    claim_idle_ms: int = 60_000
    batch: int = 100
    _pending: bool = field(default=True, init=False, repr=False)  # entries of this consumer may be pending
    _next_claim: float = field(default=0.0, init=False, repr=False)  # time.monotonic() of the next XAUTOCLAIM

    def ensure_group(self) -> None:
        ensure_group(self.client, self.group, self.stream)

    def consume_once(self, block_ms: int = CONSUMER_BLOCK_MS) -> int:
        """Take over entries abandoned by other consumers (at most every half ``claim_idle_ms``:
        none can be taken sooner), handle this consumer's pending entries (at its first pass, and
        after a pass that left or took over some), then new ones (waiting up to ``block_ms``);
        returns how many were handled. The entries of one read are acknowledged together.

        In the usual pass, an entry costs two round trips (the read, the acknowledgement), not
        four: each of these processes reads every announcement (each job's outcome) and handles
        few of them."""
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self.claim_idle_ms / 2000
            claimed = self.client.xautoclaim(self.stream, self.group, self.name, self.claim_idle_ms,
                                             count=self.batch, justid=True)
            self._pending = self._pending or bool(claimed)
        handled, more_pending = 0, False
        for start in ("0", ">") if self._pending else (">",):
            batches = self.client.xreadgroup(self.group, self.name, {self.stream: start}, count=self.batch,
                                             block=block_ms if start == ">" else None)
            self._pending = True  # until the entries read are all handled
            done: list[str] = []
            try:
                for _stream, entries in batches or []:
                    for entry_id, fields in entries:
                        if fields:  # a pending entry trimmed off the stream comes back without fields
                            self.handle(fields)
                        done.append(entry_id)
            finally:
                if done:
                    self.client.xack(self.stream, self.group, *done)
            handled += len(done)
            more_pending = more_pending or (start == "0" and len(done) >= self.batch)
        self._pending = more_pending
        return handled

    def run(self, stop: threading.Event, retry_seconds: float = 5.0) -> None:
        """Consume until ``stop`` is set. A failed pass (Redis or the handler's database
        unreachable) is logged and retried after ``retry_seconds``; its entry stays pending."""
        outage = Outage(log, f"{self.group}/{self.name} consuming {self.stream}")
        while not stop.is_set():
            try:
                self.ensure_group()
                while not stop.is_set():
                    self.consume_once()
                    outage.passed()
            except RetryLater as exc:
                log.info("%s/%s will handle an entry again in %s s: %s", self.group, self.name, retry_seconds, exc)
                stop.wait(retry_seconds)
            except Exception as exc:  # a long-running consumer must outlive an outage; nothing is acked
                outage.failed(exc, f"retrying in {retry_seconds} s")
                stop.wait(retry_seconds)


def consume_forever(client: redis.Redis, group: str, handle: Callable[[dict[str, str]], None],
                    process: str) -> None:
    """The body of an events process: its metrics endpoint (``process`` names it), and one
    consumer of ``group``, named after this host and process, handling ``platform:events``
    until interrupted."""
    serve_metrics(process)
    name = f"{socket.gethostname()}-{os.getpid()}"
    log.info("consuming %s as %s/%s", PLATFORM_STREAM, group, name)
    try:
        GroupConsumer(client, group, name, handle).run(threading.Event())
    except KeyboardInterrupt:
        pass
