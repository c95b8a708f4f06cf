"""Fair share across users, model affinity and priority lanes: where admitted jobs wait.

Admission commits the job row, then puts an entry here (``FairQueue.enqueue``); the
scheduler process (``services.render_worker.scheduler``) releases entries to workers only
as their prompt slots free up (``plan``), one Celery message per free slot, sent to the
chosen worker's own queue ``<RENDER_QUEUE>.worker.<workerId>``. So the line forms here,
where it can be fair, and not in the workers' queues.

* **Users**: each lane is a sorted set of job ids scored by a virtual finish tag: a job's
  tag is ``max(V, the user's last tag) + images / weight``, where ``V`` is the tag of the
  last job released from the lane. A user with a backlog of 40 jobs and one who arrives
  later with 5 interleave; a user of weight 4 gets four times the images of a user of
  weight 1 while both wait (``RENDER_SHARE_WEIGHTS`` by role, or an administrator's
  per-user weight).
* **Lanes**: ``interactive`` (people) and ``batch`` (service accounts: the queue API and
  their API tokens). Stride scheduling between them gives batch ``RENDER_BATCH_MIN_SHARE``
  of the releases while both wait, and everything when interactive is empty.
* **Affinity**: a job goes to an idle worker that holds its checkpoint (the model of the
  last job released to it, else the ``loadedModel`` its catalog reports); when only busy
  workers hold it, it waits up to ``RENDER_AFFINITY_WAIT_SECONDS`` for one, and jobs behind
  it may use the idle workers meanwhile. A job only goes to a worker whose catalog lists
  every model file it names.

The database stays the truth: an entry is only a hint that a ``queued`` row waits. Cancel
removes the entry; the scheduler rebuilds entries of queued rows it finds in neither the
waiting nor the released set (after a Redis restart), takes back jobs released to a worker
that died before claiming them, and a job runs only after a worker's conditional claim.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Iterable

import redis

from services.render.catalog import MODEL_KINDS
from services.render.client import BATCH, INTERACTIVE, LANES
from services.render.jobs import ClaimedJob
from services.render.models import RenderJob
from services.render.workflows import Template

# How far down each lane the planner looks for a job an idle worker can take.
LOOKAHEAD = 64

# One script keeps the tag, the user's last tag and the entry consistent under concurrent
# admissions. KEYS: waiting entries (hash), released entries (hash), the lane's sorted set,
# the lane's last tags by user (hash), virtual times by lane (hash), the wake-up list, the
# other lane's sorted set, the "every slot taken" flag. ARGV: job id, entry JSON, user id,
# increment, lane, "1" to put the job at the front (a job taken back from a worker: it has
# waited already). It nudges the scheduler unless the flag says no slot is free (a slot that
# frees nudges it; see ``FairQueue.note_full``). Returns {0} when
# the job waits or was released already, else {1, its rank in its lane, the other lane's size}
# (its place in line, ``FairQueue.position``, without another round trip).
_ENQUEUE = """
if ARGV[6] == '1' then redis.call('HDEL', KEYS[2], ARGV[1]) end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return {0}
end
local v = tonumber(redis.call('HGET', KEYS[5], ARGV[5]) or '0')
local tag = v
if ARGV[6] ~= '1' then
  local last = tonumber(redis.call('HGET', KEYS[4], ARGV[3]) or '0')
  if last > tag then tag = last end
  tag = tag + tonumber(ARGV[4])
  redis.call('HSET', KEYS[4], ARGV[3], string.format('%.6f', tag))
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], string.format('%.6f', tag), ARGV[1])
if ARGV[6] == '1' or redis.call('EXISTS', KEYS[8]) == 0 then
  redis.call('LPUSH', KEYS[6], '1')
  redis.call('LTRIM', KEYS[6], 0, 0)
end
return {1, redis.call('ZRANK', KEYS[3], ARGV[1]), redis.call('ZCARD', KEYS[7])}
"""

# A pass's reads in one script, sent by its SHA (``EVALSHA``; the text again only after Redis lost
# it). KEYS: 1 the lease, 2 the nudges, 3 the epoch, 4 the released entries, 5 the lanes' passes,
# 6 their virtual times, 7 the workers' last models, 8 the fleet's version, 9 the waiting entries,
# then ARGV[4] lanes' sorted sets, then keys whose values the caller wants too (``values``).
# ARGV: 1 an owner ("": read only), 2 the lease's seconds, 3 the look-ahead, 4 the number of
# lanes, 5.. ids whose entries the caller knows. With an owner it first takes or renews the lease
# and takes the nudges, and answers {0} (nothing read) when another holds the lease. Answers
# {lease (1 taken, 2 renewed, 0 read only), epoch exists, released, one {size, window} per lane
# (its first jobs as id, tag, entry; "" for a known id's entry), passes, virtual times, models,
# fleet, values}; hashes as flat lists.
_READ = """
local lease = 0
if ARGV[1] ~= '' then
  if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
    lease = 1
  elseif redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('EXPIRE', KEYS[1], ARGV[2])
    lease = 2
  else
    return {0}
  end
  redis.call('DEL', KEYS[2])
end
local known = {}
for i = 5, #ARGV do known[ARGV[i]] = true end
local last_lane = 9 + tonumber(ARGV[4])
local lanes = {}
for k = 10, last_lane do
  local ranked = redis.call('ZRANGE', KEYS[k], 0, tonumber(ARGV[3]) - 1, 'WITHSCORES')
  local flat = {}
  for i = 1, #ranked, 2 do
    local raw = ''
    if not known[ranked[i]] then raw = redis.call('HGET', KEYS[9], ranked[i]) end
    flat[#flat + 1] = ranked[i]
    flat[#flat + 1] = ranked[i + 1]
    flat[#flat + 1] = raw
  end
  lanes[#lanes + 1] = {redis.call('ZCARD', KEYS[k]), flat}
end
local values = {}
if #KEYS > last_lane then values = redis.call('MGET', unpack(KEYS, last_lane + 1)) end
return {lease, redis.call('EXISTS', KEYS[3]), redis.call('HGETALL', KEYS[4]), lanes,
        redis.call('HGETALL', KEYS[5]), redis.call('HGETALL', KEYS[6]), redis.call('HGETALL', KEYS[7]),
        redis.call('GET', KEYS[8]), values}
"""


@dataclass(frozen=True)
class Entry:
    """What the scheduler needs to know of a waiting job."""

    job_id: str
    user_id: int
    lane: str
    weight: float
    workflow: str
    model: str | None  # the main checkpoint: the affinity key
    needs: tuple[str, ...]  # every model file the job names; a worker must list them all
    images: int
    hops: int = 0
    avoid: tuple[str, ...] = ()  # workers that already said they cannot serve it

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> "Entry":
        data = json.loads(raw)
        data["needs"], data["avoid"] = tuple(data.get("needs", ())), tuple(data.get("avoid", ()))
        return cls(**data)


def entry_for(job: RenderJob | ClaimedJob, template: Template | None, *, hops: int = 0,
              avoid: Iterable[str] = ()) -> Entry:
    """The entry of a job row (at admission, and when a job is put back in line)."""
    needs = tuple(str(job.params[p["name"]]) for p in (template.parameters if template else [])
                  if p.get("from") in MODEL_KINDS and isinstance(job.params.get(p["name"]), str))
    return Entry(job_id=job.id, user_id=int(job.user_id), lane=job.lane or INTERACTIVE,
                 weight=float(job.share_weight or 1.0), workflow=job.workflow, model=job.model, needs=needs,
                 images=int(job.images_requested or 1),
                 hops=hops, avoid=tuple(avoid))


def parse_weights(raw: str) -> dict[str, float]:
    """``admin=4,user=1`` → {"admin": 4.0, "user": 1.0}; ValueError on a malformed pair."""
    weights = {}
    for pair in filter(None, (part.strip() for part in raw.split(","))):
        role, _, value = pair.partition("=")
        weight = float(value)
        if not role.strip() or not 0 < weight <= 1000:
            raise ValueError(pair)
        weights[role.strip()] = weight
    return weights


@dataclass
class Released:
    entry: Entry
    worker: str
    at: float


class FairQueue:
    """The waiting lines in Redis, under ``<RENDER_QUEUE>:sched:*`` (so a private queue
    prefix, as the tests use, has private lines)."""

    def __init__(self, redis_client: redis.Redis, prefix: str = "render") -> None:
        self.redis = redis_client
        base = f"{prefix}:sched:"
        self.entries_key = base + "waiting"
        self.released_key = base + "released"
        self.vtime_key = base + "vtime"
        self.passes_key = base + "lanes"
        self.models_key = base + "model"
        self.wake_key = base + "wake"
        self.fleet_key = base + "fleet"
        self.epoch_key = base + "epoch"
        self.lock_key = base + "lock"
        self.full_key = base + "full"
        self._enqueue = redis_client.register_script(_ENQUEUE)
        self._read = redis_client.register_script(_READ)

    def lane_key(self, lane: str) -> str:
        return f"{self.entries_key}:{lane}"

    def finish_key(self, lane: str) -> str:
        return f"{self.entries_key}:{lane}:last"

    # -- admission, cancel, requeue ------------------------------------------------------
    def enqueue(self, entry: Entry, front: bool = False) -> bool:
        """Add a waiting job (no-op when it waits or was released already); ``front`` puts a job
        taken back from a worker ahead of the lane, replacing its released entry."""
        return bool(self._run_enqueue(entry, front)[0])

    def enqueue_placed(self, entry: Entry, batch_share: float) -> int | None:
        """Add a job new in line (admission) and answer its place, as ``position`` would, in the
        same round trip; None when it waits or was released already."""
        added, *place = self._run_enqueue(entry, front=False)
        if not added:
            return None
        rank, other = place
        return rank + interleaved(rank, other, entry.lane, batch_share)

    def _run_enqueue(self, entry: Entry, front: bool) -> list[int]:
        other = BATCH if entry.lane == INTERACTIVE else INTERACTIVE
        return self._enqueue(keys=[self.entries_key, self.released_key, self.lane_key(entry.lane),
                                   self.finish_key(entry.lane), self.vtime_key, self.wake_key, self.lane_key(other),
                                   self.full_key],
                             args=[entry.job_id, entry.to_json(), entry.user_id,
                                   entry.images / max(entry.weight, 1e-6), entry.lane, "1" if front else "0"])

    def remove(self, job_id: str) -> None:
        """Forget a job (cancelled or failed while waiting)."""
        pipe = self.redis.pipeline(transaction=True)
        for lane in LANES:
            pipe.zrem(self.lane_key(lane), job_id)
        pipe.hdel(self.entries_key, job_id)
        pipe.hdel(self.released_key, job_id)
        pipe.execute()

    def wake(self) -> None:
        """Nudge the scheduler: a slot freed up or a job arrived."""
        self._nudge(self.redis.pipeline(transaction=False)).execute()

    def fleet_changed(self) -> None:
        """A worker joined, left, or changed what it offers (workflows, models, slots, state):
        the scheduler reads the workers' catalogs again on its next pass, which this nudges."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(self.fleet_key)
        self._nudge(pipe).execute()

    def _nudge(self, pipe: redis.client.Pipeline) -> redis.client.Pipeline:
        pipe.lpush(self.wake_key, "1")
        pipe.ltrim(self.wake_key, 0, 0)
        return pipe

    # -- reading -------------------------------------------------------------------------
    def waiting(self, lane: str, limit: int = LOOKAHEAD) -> list[tuple[Entry, float]]:
        """The first ``limit`` entries of a lane in fair order, with their tags."""
        ranked = self.redis.zrange(self.lane_key(lane), 0, limit - 1, withscores=True)
        if not ranked:
            return []
        raws = self.redis.hmget(self.entries_key, [job_id for job_id, _ in ranked])
        return [(Entry.from_json(raw), tag) for (_, tag), raw in zip(ranked, raws) if raw is not None]

    def waiting_ids(self) -> list[str]:
        return list(self.redis.hkeys(self.entries_key))

    def released(self) -> dict[str, Released]:
        return {job_id: _released(raw) for job_id, raw in self.redis.hgetall(self.released_key).items()}

    def position(self, job_id: str, batch_share: float) -> int | None:
        """Jobs ahead of a waiting one in the order the scheduler will release them: its rank in
        its lane plus the other lane's releases the lanes' shares interleave before it. None
        when the job does not wait here (released, finished, or unknown)."""
        raw = self.redis.hget(self.entries_key, job_id)
        if raw is None:
            return None
        lane = Entry.from_json(raw).lane
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrank(self.lane_key(lane), job_id)
        pipe.zcard(self.lane_key(BATCH if lane == INTERACTIVE else INTERACTIVE))
        rank, other = pipe.execute()
        return None if rank is None else rank + interleaved(rank, other, lane, batch_share)

    def snapshot(self, lookahead: int = LOOKAHEAD,
                 known: dict[str, tuple[Entry, float]] | None = None) -> "Snapshot":
        """What one scheduler pass reads, in one command (the ``_READ`` script). ``known``: entries
        and tags the caller read before, by job id, whose entries are not sent again (neither
        changes while the job waits: ``enqueue`` keeps a waiting job as it is, and it changes only
        after the job left the line, released or removed, which the caller must note by dropping
        it)."""
        state = self._snapshot(lookahead, known, None, [])
        assert state is not None  # only a pass that asks for the lease goes unanswered
        return state

    def lead(self, owner: str, seconds: int, lookahead: int = LOOKAHEAD,
             known: dict[str, tuple[Entry, float]] | None = None, values: list[str] | None = None) -> "Snapshot | None":
        """A pass's first read: take or renew the scheduler's lease (``owner``, for ``seconds``),
        take the nudges, and read the line as ``snapshot`` does, with the values of the keys
        ``values`` (the workers' heartbeats); all in one command. None when another holds the
        lease (nothing read)."""
        return self._snapshot(lookahead, known, (owner, seconds), values or [])

    def _snapshot(self, lookahead: int, known: dict[str, tuple[Entry, float]] | None,
                  lease: tuple[str, int] | None, values: list[str]) -> "Snapshot | None":
        known = known or {}
        owner, seconds = lease or ("", 0)
        answer = self._read(
            keys=[self.lock_key, self.wake_key, self.epoch_key, self.released_key, self.passes_key, self.vtime_key,
                  self.models_key, self.fleet_key, self.entries_key, *(self.lane_key(lane) for lane in LANES),
                  *values],
            args=[owner, seconds, lookahead, len(LANES), *known])
        if lease and not answer[0]:
            return None
        taken, epoch, released, window, passes, vtimes, models, fleet, read_values = answer
        counts, waiting = {}, {}
        for lane, (count, flat) in zip(LANES, window):
            counts[lane], waiting[lane] = int(count), []
            for job_id, tag, raw in zip(flat[0::3], flat[1::3], flat[2::3]):
                if raw == "":  # known: its entry was not sent
                    waiting[lane].append(known[job_id])
                elif raw is not None:  # None: an id whose entry is gone (a remove half done): skipped
                    waiting[lane].append((Entry.from_json(raw), float(tag)))
        return Snapshot(
            synced=bool(epoch),
            released={job_id: _released(raw) for job_id, raw in _pairs(released)},
            counts=counts,
            waiting=waiting,
            passes={lane: float(value) for lane, value in _pairs(passes)},
            vtimes={lane: float(value) for lane, value in _pairs(vtimes)},
            models=dict(_pairs(models)),
            fleet=fleet,
            lease=int(taken),
            values=list(read_values))

    def passes(self) -> dict[str, float]:
        return {lane: float(value) for lane, value in self.redis.hgetall(self.passes_key).items()}

    def vtimes(self) -> dict[str, float]:
        return {lane: float(value) for lane, value in self.redis.hgetall(self.vtime_key).items()}

    def last_models(self) -> dict[str, str]:
        return self.redis.hgetall(self.models_key)

    # -- releasing (the scheduler process, under its lock) -------------------------------
    def mark_released(self, placements: list["Placement"], passes: dict[str, float],
                      vtimes: dict[str, float], claimed: Iterable[str] = (), full: bool | None = None) -> None:
        """Move placed entries to the released set, advance the lanes' virtual times (``vtimes``:
        as the pass read them) and passes, and note each worker's model; ``claimed``: released
        jobs to forget on the way (``forget_released``), and ``full`` (``note_full``), in the
        same round trip."""
        vtimes = dict(vtimes)
        pipe = self.redis.pipeline(transaction=True)
        self.note_full(full, pipe)
        if claimed:
            pipe.hdel(self.released_key, *claimed)
        now = time.time()
        for placement in placements:
            entry = placement.entry
            pipe.zrem(self.lane_key(entry.lane), entry.job_id)
            pipe.hdel(self.entries_key, entry.job_id)
            pipe.hset(self.released_key, entry.job_id,
                      json.dumps({"entry": entry.to_json(), "worker": placement.worker, "at": now}))
            if entry.model:
                pipe.hset(self.models_key, placement.worker, entry.model)
            vtimes[entry.lane] = max(vtimes.get(entry.lane, 0.0), placement.tag)
        if vtimes:
            pipe.hset(self.vtime_key, mapping={lane: f"{value:.6f}" for lane, value in vtimes.items()})
        if passes:
            pipe.hset(self.passes_key, mapping={lane: f"{value:.6f}" for lane, value in passes.items()})
        pipe.execute()

    def forget_released(self, job_ids: list[str], full: bool | None = None) -> None:
        """Released jobs a worker claimed (or that ended): their slot is counted as running now;
        and ``full`` (``note_full``), in the same round trip."""
        pipe = self.redis.pipeline(transaction=False)
        if job_ids:
            pipe.hdel(self.released_key, *job_ids)
        self.note_full(full, pipe)
        if len(pipe):
            pipe.execute()

    def note_full(self, full: bool | None, pipe: redis.client.Pipeline | None = None) -> None:
        """Note whether every live worker's slots are taken (None: unchanged), on ``pipe`` when
        given, else at once. While
        they are, an admission does not nudge the scheduler: the job could not start before a slot
        frees, and what frees one nudges it (a job ending, a worker joining or changing, a job put
        back in line), as the scheduler's pass at least every ``RENDER_SCHEDULE_SECONDS`` does."""
        client = pipe if pipe is not None else self.redis
        if full:
            client.set(self.full_key, "1")
        elif full is not None:
            client.delete(self.full_key)

    def forget_workers(self, worker_ids: list[str]) -> None:
        if worker_ids:
            self.redis.hdel(self.models_key, *worker_ids)

    def prune_last_tags(self) -> None:
        """Drop users' last tags that no longer matter (behind the lane's virtual time)."""
        vtimes = self.vtimes()
        for lane in LANES:
            stale = [user for user, tag in self.redis.hgetall(self.finish_key(lane)).items()
                     if float(tag) <= vtimes.get(lane, 0.0)]
            if stale:
                self.redis.hdel(self.finish_key(lane), *stale)


def _pairs(flat: list) -> Iterable[tuple[str, str]]:
    """A hash as a script answers it (field, value, field, value, ...)."""
    return zip(flat[0::2], flat[1::2])


def _released(raw: str) -> Released:
    data = json.loads(raw)
    return Released(Entry.from_json(data["entry"]), data["worker"], data["at"])


@dataclass
class Snapshot:
    synced: bool  # the line was synced with the database since Redis last lost its data
    released: dict[str, Released]
    counts: dict[str, int]
    waiting: dict[str, list[tuple[Entry, float]]]
    passes: dict[str, float]
    vtimes: dict[str, float]
    models: dict[str, str]
    fleet: str | None  # the fleet's version (``FairQueue.fleet_changed``)
    lease: int = 0  # 1: taken, 2: renewed since the last pass, 0: not asked for
    values: list = field(default_factory=list)  # those of the keys the caller asked for, in order


def interleaved(rank: int, other_waiting: int, lane: str, batch_share: float) -> int:
    """Releases of the other lane that come before the ``rank``-th job of ``lane``."""
    share = batch_share if lane == BATCH else 1.0 - batch_share
    return min(other_waiting, math.ceil(rank * (1.0 - share) / share))


# -- the planner (pure) ------------------------------------------------------------------
@dataclass
class WorkerSlots:
    """A live worker as the planner sees it."""

    worker_id: str
    free: int
    workflows: frozenset[str]
    models: frozenset[str]
    loaded: str | None = None

    def can_run(self, entry: Entry) -> bool:
        return (entry.workflow in self.workflows and self.worker_id not in entry.avoid
                and all(name in self.models for name in entry.needs))


@dataclass(frozen=True)
class Placement:
    entry: Entry
    tag: float
    worker: str


@dataclass
class Policy:
    batch_share: float = 0.2
    affinity_wait: float = 5.0  # 0: ignore loaded models
    lookahead: int = LOOKAHEAD
    shares: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        self.shares = {INTERACTIVE: 1.0 - self.batch_share, BATCH: self.batch_share}


def plan(waiting: dict[str, list[tuple[Entry, float]]], workers: list[WorkerSlots], passes: dict[str, float],
         policy: Policy, now: float, passed_over: dict[str, float]) -> list[Placement]:
    """Which waiting jobs go to which workers now, one per free slot. ``passes`` (the lanes'
    stride counters) is updated in place, and so is ``passed_over``: when each job was first
    left waiting for a busy worker holding its model (its affinity wait counts from then). Lanes are served lowest pass first; within a lane
    the first job (fair order) that some idle worker can take, preferring affinity."""
    pending = {lane: list(items) for lane, items in waiting.items() if items}
    placements: list[Placement] = []
    while pending and any(w.free > 0 for w in workers):
        # A lane that sat idle does not bank credit: it starts at most one stride behind.
        top = max(passes.get(lane, 0.0) - 1.0 / policy.shares[lane] for lane in pending)
        for lane in pending:
            passes[lane] = max(passes.get(lane, 0.0), top)
        chosen = None
        for lane in sorted(pending, key=lambda name: (passes[name], LANES.index(name))):
            found = _place(pending[lane], workers, policy, now, passed_over)
            if found is not None:
                chosen = lane, found
                break
        if chosen is None:
            break
        lane, (index, worker) = chosen
        entry, tag = pending[lane].pop(index)
        if not pending[lane]:
            del pending[lane]
        passes[lane] += 1.0 / policy.shares[lane]
        worker.free -= 1
        if entry.model:
            worker.loaded = entry.model
        placements.append(Placement(entry, tag, worker.worker_id))
    return placements


def _place(items: list[tuple[Entry, float]], workers: list[WorkerSlots], policy: Policy,
           now: float, passed_over: dict[str, float]) -> tuple[int, WorkerSlots] | None:
    """The first job of the window some idle worker should take, and that worker. A worker
    that holds the job's checkpoint, or holds none yet, takes it at no switch (the least busy
    of them, a holder on a tie); switching another's model waits for a busy holder up to
    the affinity wait, and then picks the worker whose model the window wants least."""
    window = items[:policy.lookahead]
    wanted = {entry.model for entry, _ in window if entry.model}
    for index, (entry, _) in enumerate(window):
        capable = [w for w in workers if w.can_run(entry)]
        idle = [w for w in capable if w.free > 0]
        if not idle:
            continue
        if policy.affinity_wait <= 0 or entry.model is None:
            return index, max(idle, key=lambda w: w.free)
        no_switch = [w for w in idle if w.loaded in (entry.model, None)]
        if no_switch:
            return index, max(no_switch, key=lambda w: (w.free, w.loaded == entry.model))
        if (any(w.loaded == entry.model for w in capable)
                and now - passed_over.setdefault(entry.job_id, now) < policy.affinity_wait):
            continue  # a busy worker holds its model: wait for it a while, let others pass
        return index, min(idle, key=lambda w: (w.loaded in wanted, -w.free))
    return None
