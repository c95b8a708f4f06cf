"""The scheduler process: ``python -m services.render_worker.scheduler`` (``make run``
starts one). It releases waiting jobs (``services.render.scheduler``) to workers as their
prompt slots free up: one Celery message per free slot, to the chosen worker's own queue.

A pass runs whenever admission or a worker nudges it (``<RENDER_QUEUE>:sched:wake``: a job
arrived while a slot may be free, a job ended, the fleet changed) and at least every
``RENDER_SCHEDULE_SECONDS`` while jobs wait or are released; with neither, a pass could only
renew the lease until a nudge comes, so the leader waits for one up to half its lease (and no
later than its next sync with the database). Each pass
* counts every live worker's free slots: its catalog's ``slots`` minus its running jobs
  (the database) minus jobs released to it that it has not claimed yet;
* takes back jobs released to a worker that died, or that no worker claimed within
  ``RENDER_LOST_MESSAGE_SECONDS``, and puts them at the front of their lane;
* asks the planner which waiting jobs go where, and sends them;
* tells the owners of the first waiting jobs (the planner's look-ahead) their place in line
  (``job.position``: at once for a job new in line, at most once a second when it moved);
and every ``RENDER_RECONCILE_SECONDS``, or at once when Redis lost its data, it syncs the
line with the database: queued jobs found in neither the waiting nor the released set are
put back (in fair order), entries of jobs that no longer wait are dropped, and what it
kept about workers that are gone (last model, declared queue) is forgotten; on a Redis broker
their own queues get the expiry they have on RabbitMQ (``expire_queues_of_gone_workers``, at
most every ``GONE_QUEUES_SECONDS``).

Run one or more anywhere that reaches the database, Redis and the broker: a lease in
Redis (``<RENDER_QUEUE>:sched:lock``) lets one release at a time; another takes over
within a few seconds of the holder's death.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

from celery import Celery
from kombu.utils.encoding import bytes_to_str

from shared.config import load_settings
from shared.db import Database, utcnow
from shared.events import CONSUMER_BLOCK_MS, EventBus, redis_client
from shared.heap import freeze_startup_objects
from shared.metrics import serve_metrics
from shared.outage import Outage
from shared.tasks import make_celery
from shared.web import configure_logging

from services.render import jobs
from services.render.metrics import SCHEDULER_LEADING, SCHEDULER_RELEASED, SCHEDULER_TAKEN_BACK, SCHEDULER_WAITING
from services.render.catalog import MODEL_KINDS, REFRESH_SECONDS, alive_key, read_live_catalogs, workflow_names
from services.render.config import RenderConfig, load_config
from services.render.dispatch import (WORKER_QUEUE_EXPIRES_SECONDS, declare_worker_queue, estimated_start_seconds,
                                      send_job, worker_queue)
from services.render.scheduler import (BATCH, INTERACTIVE, LANES, Entry, FairQueue, Policy, Released, Snapshot,
                                       WorkerSlots, entry_for, interleaved, plan)
from services.render.workflows import TemplateStore

log = logging.getLogger(__name__)

# A job admitted this recently may not be in line yet (its admission enqueues after the commit).
SYNC_GRACE_SECONDS = 2.0
POSITIONS_SECONDS = 1.0
# A job this many places from the front or nearer hears every change of its place (at most once a
# second); one further back at most every position / POSITIONS_EXACT seconds, so the place it shows
# is at most about a tenth too far back, and a deep line costs events that grow with the
# logarithm of its depth rather than with its depth.
POSITIONS_EXACT = 10
# The longest one BLPOP waits for a nudge: below redis-py's 5-s socket timeout, which would
# otherwise end a longer wait (RENDER_SCHEDULE_SECONDS of 5 or more) with a TimeoutError.
WAKE_SLICE_SECONDS = CONSUMER_BLOCK_MS / 1000
# The workers' catalogs are read again when the fleet's version changed (a worker joined, left, or
# changed what it offers), and at least this often (as often as workers refresh them).
CATALOG_SECONDS = REFRESH_SECONDS
# On a Redis broker, how often a sync also walks the broker's keys for queues of workers that are
# gone (``expire_queues_of_gone_workers``, a SCAN of the whole keyspace): a queue there lives an
# hour, so a few minutes late is nothing.
GONE_QUEUES_SECONDS = 300.0


class Scheduler:
    def __init__(self, config: RenderConfig, db: Database, events: EventBus, celery: Celery,
                 templates: TemplateStore, owner: str) -> None:
        self.config = config
        self.db = db
        self.events = events
        self.redis = events.redis
        self.celery = celery
        self.templates = templates
        self.owner = owner
        self.fair = FairQueue(self.redis, config.queue_prefix)
        self.policy = Policy(batch_share=config.batch_min_share, affinity_wait=config.affinity_wait_seconds)
        self.lease_seconds = max(5, int(config.schedule_seconds * 5))
        self._catalogs: tuple[float, str | None, list[dict[str, Any]]] = (float("-inf"), None, [])
        self._synced_at = float("-inf")
        self._positions: dict[str, tuple[int, float]] = {}  # the place each job heard, and when
        self._positions_at = float("-inf")
        self._passed_over: dict[str, float] = {}  # see plan()
        self._taken_back = False
        self._leading = False  # as of the last pass
        self._idle = False  # the last pass led and found nothing waiting or released
        self._entries: dict[str, tuple[Entry, float]] = {}  # the window's entries and tags, as last read
        self._declared: set[str] = set()  # workers whose own queue this process declared
        self._queues_expired_at = float("-inf")  # expire_queues_of_gone_workers' last run
        self._claimed: list[str] = []  # released jobs the last workers() found claimed or over
        self._full: bool | None = None  # what this process last wrote of FairQueue.note_full (None: unknown)
        self.slots = 0
        self.running = 0

    # -- one pass ------------------------------------------------------------------------
    def run_once(self) -> int | None:
        """One pass: the number of jobs released, None when another scheduler leads."""
        # One command: the lease, the nudges (taken: this pass serves them), the line with the
        # fleet's version (when a worker joined or changed, its catalogs are read again) and, when it
        # leads already, the heartbeats of the workers this process knows.
        read_at, fleet, catalogs = self._catalogs
        known = self._leading and time.monotonic() - read_at <= CATALOG_SECONDS
        ids = [str(c.get("workerId")) for c in catalogs] if known else []
        state = self.fair.lead(self.owner, self.lease_seconds, self.policy.lookahead, self._entries,
                               [alive_key(w) for w in ids])
        self._leading = state is not None
        self._idle = False
        if state is None:
            SCHEDULER_LEADING.set(0)
            self._entries, self._full = {}, None  # another scheduler releases meanwhile
            return None
        SCHEDULER_LEADING.set(1)
        beats = state.values if ids and state.fleet == fleet else None
        fleet = state.fleet
        if state.lease == 1:  # the lease lapsed: another may have released meanwhile
            self._full = None
            if self._entries:
                self._entries = {}
                state = self.snapshot()
        if not state.synced or time.monotonic() - self._synced_at >= self.config.reconcile_seconds:
            self.sync()
            state = self.snapshot()
        for lane in LANES:
            SCHEDULER_WAITING.labels(lane).set(state.counts.get(lane, 0))
        if not state.released and not any(state.counts.values()):
            self._positions, self._entries, self._idle = {}, {}, True
            if self._full is not False:  # a job that arrives in an empty line may find a free slot
                self.fair.note_full(False)
                self._full = False
            return 0
        if beats is not None:
            alive = {wid for wid, beat in zip(ids, beats) if beat}
        else:
            catalogs, alive = self.live_workers(fleet)
        workers = self.workers(state.released, state.models, catalogs, alive)
        if self._taken_back:  # jobs a dead worker never claimed are back in line
            state = self.snapshot()
        placements = []
        if any(w.free > 0 for w in workers):
            placements = plan(state.waiting, workers, state.passes, self.policy, time.time(), self._passed_over)
            window = {entry.job_id for items in state.waiting.values() for entry, _ in items}
            self._passed_over = {job_id: at for job_id, at in self._passed_over.items() if job_id in window}
        placed = {p.entry.job_id for p in placements}
        self._entries = {entry.job_id: (entry, tag) for items in state.waiting.values() for entry, tag in items
                         if entry.job_id not in placed}  # a released job's entry may differ when it comes back
        full = not any(w.free > 0 for w in workers)  # after the plan took the slots it filled
        note = None if full == self._full else full
        if placements:  # and forget the claimed jobs in the same round trip
            self.fair.mark_released(placements, state.passes, state.vtimes, self._claimed, note)
            self._full = full
            with self.celery.producer_or_acquire() as producer, producer.batch():  # one round trip on Redis
                for placement in placements:
                    send_job(self.celery, self.worker_queue(placement.worker, producer), placement.entry.job_id,
                             placement.entry.hops, producer, declared=True)
                    SCHEDULER_RELEASED.labels(placement.entry.lane).inc()
        else:
            self.fair.forget_released(self._claimed, note)
            self._full = full
        self.publish_positions(
            {lane: [e for e, _ in items if e.job_id not in placed] for lane, items in state.waiting.items()},
            {lane: state.counts[lane] - sum(1 for p in placements if p.entry.lane == lane) for lane in LANES})
        return len(placements)

    def snapshot(self) -> Snapshot:
        """The line read again within a pass (after a sync, or after taking jobs back)."""
        return self.fair.snapshot(self.policy.lookahead, self._entries)

    def worker_queue(self, worker_id: str, producer: Any) -> str:
        """The worker's own queue, declared on the broker the first time this process sends there
        (a live worker's queue does not expire: it consumes it; ids are new on every start)."""
        name = declare_worker_queue(self.celery, self.config.queue_prefix, worker_id)
        if worker_id not in self._declared:
            producer.maybe_declare(self.celery.amqp.queues[name])
            self._declared.add(worker_id)
        return name

    def live_workers(self, fleet: str | None) -> tuple[list[dict[str, Any]], set[str]]:
        """The workers' catalogs (a SCAN), kept as those of the fleet's version ``fleet``, and which
        of those workers have a heartbeat."""
        catalogs = read_live_catalogs(self.redis)
        self._catalogs = (time.monotonic(), fleet, catalogs)
        ids = [str(c.get("workerId")) for c in catalogs]
        beats = self.redis.mget([alive_key(w) for w in ids]) if ids else []
        return catalogs, {wid for wid, beat in zip(ids, beats) if beat}

    def workers(self, released: dict[str, Released], models: dict[str, str], catalogs: list[dict[str, Any]],
                alive: set[str]) -> list[WorkerSlots]:
        """Live workers (``catalogs``, those of them ``alive``) with their free slots; settles the
        released set on the way (and notes in ``_taken_back`` whether it put any job back in line)."""
        with self.db.read() as session:
            running, statuses = jobs.running_and_statuses(session, list(released))
        draining = {str(c.get("workerId")) for c in catalogs if c.get("state") == "draining"}
        pending: Counter[str] = Counter()
        claimed, now = [], time.time()
        self._taken_back = False
        for job_id, item in released.items():
            if statuses.get(job_id) != "queued":
                claimed.append(job_id)  # running now (counted above), or over
            elif (item.worker not in alive or item.worker in draining
                  or now - item.at > self.config.lost_message_seconds):
                log.warning("job %s: released to %s but not claimed (dead, draining or lost message); "
                            "putting it back in line", job_id, item.worker)
                self.fair.enqueue(item.entry, front=True)
                SCHEDULER_TAKEN_BACK.inc()
                self._taken_back = True
            else:
                pending[item.worker] += 1
        self._claimed = claimed  # forgotten by run_once: with the pass's releases, or alone
        found = []
        for catalog in catalogs:
            wid = str(catalog.get("workerId"))
            if wid not in alive or catalog.get("state") == "draining":  # a draining worker takes no more
                continue
            slots = int(catalog.get("slots", 1))
            found.append(WorkerSlots(
                worker_id=wid, free=slots - running.get(wid, 0) - pending[wid],
                workflows=frozenset(workflow_names(catalog)),
                models=frozenset(name for kind in MODEL_KINDS + ("builtin_vaes",) for name in catalog.get(kind, [])),
                loaded=models.get(wid) or catalog.get("loadedModel")))
        self.slots = sum(w.free + running.get(w.worker_id, 0) + pending[w.worker_id] for w in found)
        self.running = sum(running.get(w.worker_id, 0) for w in found)
        return found

    # -- the line against the database ---------------------------------------------------
    def sync(self) -> int:
        """Put back queued jobs missing from the line, drop entries of jobs that no longer wait;
        returns how many were put back."""
        cutoff = utcnow() - timedelta(seconds=SYNC_GRACE_SECONDS)
        mine = self.config.queue_prefix + "."
        with self.db.read() as session:
            queued = jobs.queued_ids(session, cutoff, limit=10_000)
            known = set(self.fair.waiting_ids()) | set(self.fair.released())
            missing = [job_id for job_id, queue in queued if job_id not in known and queue.startswith(mine)]
            rows = {job.id: job for start in range(0, len(missing), 500)
                    for job in jobs.jobs_by_id(session, missing[start:start + 500])}
        restored = 0
        for job_id in missing:  # oldest first: the fair tags are rebuilt in admission order
            job = rows.get(job_id)
            if job is not None and job.status == "queued":
                restored += self.fair.enqueue(entry_for(job, self.templates.get(job.workflow)))
        waiting = self.fair.waiting_ids()
        with self.db.read() as session:
            statuses = jobs.statuses(session, waiting)
        for job_id in waiting:
            if statuses.get(job_id) != "queued":
                self.fair.remove(job_id)
        self.fair.prune_last_tags()
        alive_ids = {str(c.get("workerId")) for c in read_live_catalogs(self.redis)}
        self.fair.forget_workers([w for w in self.fair.last_models() if w not in alive_ids])
        self.redis.set(self.fair.epoch_key, self.owner)
        self._synced_at = time.monotonic()
        self._entries, self._full = {}, None  # the flag is written again (Redis may have lost it)
        for worker_id in self._declared - alive_ids:  # ids are new on every start: never sent to again
            self.celery.amqp.queues.pop(worker_queue(self.config.queue_prefix, worker_id), None)
        self._declared &= alive_ids
        if time.monotonic() - self._queues_expired_at >= GONE_QUEUES_SECONDS:
            self._queues_expired_at = time.monotonic()
            self.expire_queues_of_gone_workers()
        if restored:
            log.warning("scheduler: put %s queued jobs back in line (Redis had lost them)", restored)
        return restored

    def expire_queues_of_gone_workers(self) -> None:
        """On a Redis broker, give the own queue of each worker that is gone the expiry RabbitMQ
        gives it (``x-expires``). kombu sets it with every message sent, but not when it puts a
        worker's unacknowledged message back (a killed worker's after the visibility timeout, a
        stopping one's at once): nothing reads the queue of a past start, so that message stayed
        for good. Its job does not need it: the database has the job, and a running one is the
        reconciler's to take back, a released one ``workers``'."""
        with self.celery.pool.acquire(block=True) as connection:
            if connection.transport.driver_type != "redis":
                return  # RabbitMQ expires the queues itself
            with connection.default_channel.conn_or_acquire() as broker:
                base = worker_queue(self.config.queue_prefix, "")
                keys = [bytes_to_str(key) for key in broker.scan_iter(match=base + "*", count=1000, _type="list")]
                beats = self.redis.mget([alive_key(key[len(base):]) for key in keys]) if keys else []
                pipe = broker.pipeline(transaction=False)
                for key, beat in zip(keys, beats):
                    if beat is None:
                        pipe.expire(key, WORKER_QUEUE_EXPIRES_SECONDS, nx=True)  # nx: one sent has it
                expiring = sum(pipe.execute())
        if expiring:
            log.info("scheduler: %s queues of workers that are gone expire in %s s", expiring,
                     WORKER_QUEUE_EXPIRES_SECONDS)

    # -- telling users -------------------------------------------------------------------
    def publish_positions(self, waiting: dict[str, list[Entry]], counts: dict[str, int]) -> None:
        """``job.position`` to the owners of the first waiting jobs: at once for a job that has not
        heard one; for a job whose place changed, at most every ``POSITIONS_SECONDS``, and for one
        more than ``POSITIONS_EXACT`` places from the front at most every position / ``POSITIONS_EXACT``
        of them (every release moves every place: a line of n jobs would otherwise cost n events
        per release)."""
        now = time.monotonic()
        refresh = now - self._positions_at >= POSITIONS_SECONDS
        if refresh:
            self._positions_at = now
        positions: dict[str, tuple[int, float]] = {}
        events: list[tuple[int, str, dict[str, Any]]] = []
        for lane, entries in waiting.items():
            other = counts.get(BATCH if lane == INTERACTIVE else INTERACTIVE, 0)
            for rank, entry in enumerate(entries):
                position = rank + interleaved(rank, other, lane, self.policy.batch_share)
                heard = self._positions.get(entry.job_id)
                if heard is not None and (heard[0] == position or not refresh or now - heard[1] <
                                          POSITIONS_SECONDS * position / POSITIONS_EXACT):
                    positions[entry.job_id] = heard
                    continue
                positions[entry.job_id] = position, now
                template = self.templates.get(entry.workflow)
                events.append((entry.user_id, "job.position", {
                    "jobId": entry.job_id, "position": position,
                    "estimatedStartSeconds": estimated_start_seconds(
                        position, self.running, self.slots, template.estimated_seconds if template else 10.0)}))
        self.events.publish_live(events)
        self._positions = positions

    def run(self, stop: threading.Event) -> None:
        """Passes until ``stop``: on every nudge, and at least every ``pause_seconds()``."""
        outage = Outage(log, "scheduler pass")
        while not stop.is_set():
            try:
                self.run_once()
                outage.passed()
                self._wait_for_nudge(stop)  # then pass at once: nudges that come meanwhile are one more pass
            except Exception as exc:  # the database, Redis or the broker away: the next pass tries again
                outage.failed(exc, f"retrying in {self.config.schedule_seconds} s")
                stop.wait(self.config.schedule_seconds)
        if self.redis.get(self.fair.lock_key) == self.owner:
            self.redis.delete(self.fair.lock_key)

    def pause_seconds(self) -> float:
        """How long to wait for a nudge before the next pass: ``RENDER_SCHEDULE_SECONDS``; after a
        pass that led and found nothing waiting or released, half the lease (which the next pass
        renews) or until the sync is due, whichever comes first, if that is longer."""
        if not self._idle:
            return self.config.schedule_seconds
        sync_due = self._synced_at + self.config.reconcile_seconds - time.monotonic()
        return max(self.config.schedule_seconds, min(self.lease_seconds / 2, sync_due))

    def _wait_for_nudge(self, stop: threading.Event) -> None:
        """Wait up to ``pause_seconds()`` for a nudge (admission, a finished job, the fleet
        changed), in slices of at most ``WAKE_SLICE_SECONDS``."""
        deadline = time.monotonic() + self.pause_seconds()
        while not stop.is_set() and (left := deadline - time.monotonic()) >= 0.01:
            if self.redis.blpop([self.fair.wake_key], timeout=min(left, WAKE_SLICE_SECONDS)):
                return


def main() -> None:
    """``python -m services.render_worker.scheduler``: one scheduler process."""
    settings = load_settings()
    config = load_config(settings)
    configure_logging("render-scheduler", settings.log_level)
    serve_metrics("scheduler")
    scheduler = Scheduler(config, Database(settings.render_database_url), EventBus(redis_client(settings.redis_url)),
                          make_celery(settings, "render_scheduler"),
                          TemplateStore(defaults=config.parameter_defaults),
                          f"scheduler@{socket.gethostname()}#{os.getpid()}")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    log.info("render scheduler: batch share %s, affinity wait %s s", config.batch_min_share,
             config.affinity_wait_seconds)
    freeze_startup_objects()
    scheduler.run(stop)


if __name__ == "__main__":
    main()
