"""The render job state machine and its queries, shared by the render API (admission,
queries, cancel) and the worker (claim, progress, outputs, finish).

Functions take an open session and only add/flush/update; the caller's
``db.transaction()`` is the unit of work. Admission's read and insert take a Core connection
instead (the caller's ``db.read_connection()`` or ``engine.begin()``): no ORM session on its
hot path. Every transition is a conditional UPDATE, so
two processes racing on one job never both win.

The worker's statements (claim, transitions, output rows, the outbox's marks) are Core
statements built once and run on the session's connection: an ORM ``update()`` composed on
every call spent more CPU in SQLAlchemy (building, cache key, ORM execution) than in the
database round trip.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from functools import cache
from datetime import datetime
from typing import Any, Callable

from sqlalchemy import bindparam, exists, func, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from services.render.models import FINISHED_STATUSES, RenderJob, RenderOutput, RenderUpload, RenderUserShare
from services.render.workflows import Template
from shared.db import utcnow
from shared.errors import Conflict, NotFound

ACTIVE_STATUSES = ("queued", "running")
MAX_SEARCH_WORDS = 5


@dataclass(frozen=True)
class OutputFile:
    """A stored image about to become an output row."""

    index: int
    image_key: str
    thumbnail_key: str
    width: int
    height: int
    file_size: int
    sha256: str
    output_id: str | None = None  # chosen before storing when the file's label names it


def new_job_id() -> str:
    return uuid.uuid4().hex


def search_text(prompt: Any) -> str | None:
    """A prompt folded for the history's search: case-folded, whitespace collapsed."""
    return " ".join(prompt.casefold().split()) if isinstance(prompt, str) else None


@dataclass(frozen=True)
class JobFilter:
    """What the history narrows jobs to; each word of ``search`` must occur in the prompt."""

    status: str | None = None
    workflow: str | None = None
    model: str | None = None
    search: str = ""


def create_job(connection: Connection, *, job_id: str, user_id: int, template: Template, params: dict[str, Any],
               price_per_image: int, queue: str, source_key: str | None = None, source_ref: str | None = None,
               idempotency_key: str | None = None, lane: str = "interactive",
               share_weight: float = 1.0) -> RenderJob:
    """Insert a queued job (one Core ``INSERT`` on ``connection``, in its caller's transaction:
    admission's hot path runs without an ORM session) and return it as inserted, as a detached
    ``RenderJob``."""
    model = params.get("model")
    now = utcnow()
    values = dict(id=job_id, user_id=user_id, workflow=template.name, workflow_version=template.version,
                  params=params, model=model if isinstance(model, str) else None,
                  search_text=search_text(params.get("prompt")), price_per_image=price_per_image, queue=queue,
                  images_requested=int(params.get("batchSize", 1)), status="queued", cancel_requested=False,
                  progress=0, images_delivered=0, attempts=0, idempotency_key=idempotency_key,
                  source_key=source_key, source_ref=source_ref, lane=lane, share_weight=share_weight,
                  created_at=now, updated_at=now)
    connection.execute(_INSERT_JOB, values)
    return RenderJob(**values)


_INSERT_JOB = RenderJob.__table__.insert()


def get_job(session: Session, job_id: str) -> RenderJob | None:
    return session.get(RenderJob, job_id)


def jobs_by_id(session: Session, job_ids: list[str]) -> list[RenderJob]:
    return list(session.scalars(select(RenderJob).where(RenderJob.id.in_(job_ids)))) if job_ids else []


def get_user_job(session: Session, user_id: int, job_id: str) -> RenderJob:
    """The caller's job; another user's job is reported as missing, not forbidden."""
    job = session.get(RenderJob, job_id)
    if job is None or job.user_id != user_id:
        raise NotFound("No such job.", code="JOB_NOT_FOUND")
    return job


def find_by_idempotency_key(session: Session, user_id: int, key: str) -> RenderJob | None:
    return session.scalars(select(RenderJob).where(RenderJob.user_id == user_id,
                                                   RenderJob.idempotency_key == key)).first()


def list_jobs(session: Session, user_id: int | None, filters: JobFilter = JobFilter(), *, page: int = 1,
              page_size: int = 20) -> tuple[list[RenderJob], int]:
    """One page of one user's jobs (every user's when ``user_id`` is None), newest first, and the total."""
    conditions = [] if user_id is None else [RenderJob.user_id == user_id]
    if filters.status:
        conditions.append(RenderJob.status == filters.status)
    if filters.workflow:
        conditions.append(RenderJob.workflow == filters.workflow)
    if filters.model:
        conditions.append(RenderJob.model == filters.model)
    for word in (search_text(filters.search) or "").split()[:MAX_SEARCH_WORDS]:
        conditions.append(RenderJob.search_text.contains(word, autoescape=True))
    total = session.scalar(select(func.count()).select_from(RenderJob).where(*conditions)) or 0
    rows = session.scalars(select(RenderJob).where(*conditions)
                           .order_by(RenderJob.created_at.desc(), RenderJob.id.desc())
                           .offset((page - 1) * page_size).limit(page_size)).all()
    return list(rows), total


_RUNNING_ALL = select(func.count()).select_from(RenderJob).where(RenderJob.status == "running")
_ADMISSION_READ = select(
    select(func.count()).select_from(RenderJob)
    .where(RenderJob.user_id == bindparam("user_id"), RenderJob.status.in_(ACTIVE_STATUSES)).scalar_subquery(),
    select(RenderUserShare.weight).where(RenderUserShare.user_id == bindparam("user_id")).scalar_subquery(),
    _RUNNING_ALL.scalar_subquery())


def admission_read(connection: Connection, user_id: int) -> tuple[int, float | None, int]:
    """What admission reads, in one statement built once: the user's queued plus running jobs,
    the weight an administrator gave the user (None: the role's), and every running job (the
    answer's estimated start: read here, so the answer needs no statement after the enqueue)."""
    count, share, running = connection.execute(_ADMISSION_READ, {"user_id": user_id}).one()
    return int(count or 0), share, int(running or 0)


def running_count(session: Session, queue: str) -> int:
    return session.scalar(select(func.count()).select_from(RenderJob).where(
        RenderJob.queue == queue, RenderJob.status == "running")) or 0


def running_count_all(session: Session) -> int:
    return session.connection().execute(_RUNNING_ALL).scalar() or 0


_RUNNING_OR_LISTED = select(RenderJob.id, RenderJob.worker, RenderJob.status).where(
    or_(RenderJob.status == "running", RenderJob.id.in_(bindparam("ids", expanding=True))))


def running_and_statuses(session: Session, job_ids: list[str]) -> tuple[dict[str, int], dict[str, str]]:
    """Running jobs per worker id, and the status of each known job among ``job_ids``: one
    statement, built once and run on the session's connection without the ORM (the scheduler
    asks both on every pass)."""
    running: dict[str, int] = {}
    found: dict[str, str] = {}
    wanted = set(job_ids)
    for job_id, worker, status in session.connection().execute(_RUNNING_OR_LISTED, {"ids": job_ids}):
        if status == "running" and worker:
            running[worker] = running.get(worker, 0) + 1
        if job_id in wanted:
            found[job_id] = status
    return running, found


def statuses(session: Session, job_ids: list[str]) -> dict[str, str]:
    """Status of each known job among ``job_ids``."""
    found: dict[str, str] = {}
    for start in range(0, len(job_ids), 500):
        found.update((job_id, status) for job_id, status in session.execute(
            select(RenderJob.id, RenderJob.status).where(RenderJob.id.in_(job_ids[start:start + 500]))))
    return found


def jobs_in_status(session: Session, status: str, updated_before: datetime | None = None,
                   limit: int = 200) -> list[RenderJob]:
    conditions = [RenderJob.status == status]
    if updated_before is not None:
        conditions.append(RenderJob.updated_at < updated_before)
    return list(session.scalars(select(RenderJob).where(*conditions).order_by(RenderJob.created_at).limit(limit)))


def queued_ids(session: Session, updated_before: datetime, limit: int) -> list[tuple[str, str]]:
    """Ids and queues of queued jobs not updated since ``updated_before``, oldest first (the
    scheduler's sync loads whole rows only for the few it has to put back)."""
    return [(job_id, queue) for job_id, queue in session.execute(
        select(RenderJob.id, RenderJob.queue).where(RenderJob.status == "queued", RenderJob.updated_at < updated_before)
        .order_by(RenderJob.created_at).limit(limit))]


def outputs_of(session: Session, job_ids: list[str]) -> dict[str, list[RenderOutput]]:
    found: dict[str, list[RenderOutput]] = {job_id: [] for job_id in job_ids}
    if job_ids:
        for output in session.scalars(select(RenderOutput).where(RenderOutput.job_id.in_(job_ids))
                                      .order_by(RenderOutput.job_id, RenderOutput.index)):
            found[output.job_id].append(output)
    return found


_OUTPUTS = RenderOutput.__table__
_JOBS = RenderJob.__table__


def get_output(session: Session, output_id: str) -> RenderOutput | None:
    return session.get(RenderOutput, output_id)


@cache
def _transition_statement(allowed_from: tuple[str, ...], columns: tuple[str, ...], uncancelled: bool):
    """``UPDATE render_jobs SET updated_at, <columns> WHERE id = :job_id AND status IN allowed_from``
    (``uncancelled``: and no cancel was requested), built once per shape; each column's value is
    bound as ``new_<column>``."""
    conditions = [_JOBS.c.id == bindparam("job_id"), _JOBS.c.status.in_(allowed_from)]
    if uncancelled:
        conditions.append(_JOBS.c.cancel_requested.is_(False))
    return _JOBS.update().where(*conditions).values({name: bindparam(f"new_{name}")
                                                     for name in ("updated_at", *columns)})


def _transition(session: Session, job_id: str, allowed_from: tuple[str, ...], *, uncancelled: bool = False,
                **values: Any) -> bool:
    statement = _transition_statement(allowed_from, tuple(sorted(values)), uncancelled)
    params = {f"new_{name}": value for name, value in values.items()}
    result = session.connection().execute(statement, {"job_id": job_id, "new_updated_at": utcnow(), **params})
    return result.rowcount == 1


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """What a claimed job's worker reads of its row (the render, its events, the metrics, putting it
    back in line), and nothing else: PyMySQL parses each column's description in Python, so the
    claim reads these 15 of the row's 37 columns (``_CLAIMED_JOB``); a column it did not read is
    an AttributeError here, not a None that looks like the row's value."""

    id: str
    user_id: int
    workflow: str
    params: dict[str, Any]
    model: str | None
    lane: str
    share_weight: float
    images_requested: int
    status: str
    worker: str | None
    attempts: int
    comfy_prompt_id: str | None
    source_key: str | None
    created_at: datetime
    started_at: datetime | None


@dataclass(frozen=True, slots=True)
class FinishedJob:
    """What a finished job's settlement, final event and metrics read of its row (``_FINISHED_JOB``:
    15 columns, read in the transaction that finishes the job). ``images_delivered`` is what the
    settlement charges: the count of the job's output rows, which its last image's update took
    under the row's lock while the job ran (no output is added to a finished job)."""

    id: str
    user_id: int
    workflow: str
    status: str
    price_per_image: int
    images_requested: int
    images_delivered: int
    error_code: str | None
    error_class: str | None
    error_message: str | None
    started_at: datetime | None
    submitted_at: datetime | None
    last_image_at: datetime | None
    settled_at: datetime | None
    announced_at: datetime | None

    @property
    def charged(self) -> int:
        return self.images_delivered * self.price_per_image

    @property
    def refunded(self) -> int:
        """The rest of the job's hold: what its images not delivered would have cost."""
        return (self.images_requested - self.images_delivered) * self.price_per_image


def _select_record(record: type, *conditions: Any):
    """``SELECT`` the columns a record holds, built once; its rows make the record by position."""
    return select(*(_JOBS.c[field.name] for field in fields(record))).where(
        _JOBS.c.id == bindparam("job_id"), *conditions)


_CLAIMED_JOB = _select_record(ClaimedJob)
_FINISHED_JOB = _select_record(FinishedJob, _JOBS.c.status.in_(FINISHED_STATUSES))


def finished_job(session: Session, job_id: str) -> FinishedJob | None:
    """A finished job; None when the job is unknown or not finished."""
    row = session.connection().execute(_FINISHED_JOB, {"job_id": job_id}).first()
    return None if row is None else FinishedJob(*row)


def _claimed(connection: Connection, job_id: str) -> ClaimedJob | None:
    row = connection.execute(_CLAIMED_JOB, {"job_id": job_id}).first()
    return None if row is None else ClaimedJob(*row)


# A claim resets the attempt's progress and timings; attempts counts it.
_CLAIM_VALUES = dict(attempts=_JOBS.c.attempts + 1, progress=0, started_at=bindparam("now"), submitted_at=None,
                     first_progress_at=None, updated_at=bindparam("now"))
_CLAIM_QUEUED = _JOBS.update().where(
    _JOBS.c.id == bindparam("job_id"), _JOBS.c.status == "queued", _JOBS.c.cancel_requested.is_(False)
).values(status="running", worker=bindparam("new_worker"), **_CLAIM_VALUES)
_TAKE_OVER = _JOBS.update().where(
    _JOBS.c.id == bindparam("job_id"), _JOBS.c.status == "running", _JOBS.c.worker == bindparam("previous")
).values(worker=bindparam("new_worker"), **_CLAIM_VALUES)


def claim_job(session: Session, job_id: str, worker: str, worker_alive: Callable[[str], bool]) -> ClaimedJob | None:
    """Mark the job running for this worker; None when someone else holds it or it is over.

    A queued, uncancelled job is taken. A running job is taken over only when the worker
    that ran it is dead (its heartbeat expired): that is a message redelivered after a
    crash. A job still running on a live worker is left alone. ``started_at`` is the
    start of the current attempt (the reconciler's deadline counts from it).
    """
    # The usual case first, in one statement: a queued job (then the row is read as it now is).
    connection = session.connection()
    params = {"job_id": job_id, "new_worker": worker, "now": utcnow()}
    claimed = connection.execute(_CLAIM_QUEUED, params).rowcount == 1
    job = _claimed(connection, job_id)
    if claimed or job is None or job.status != "running":
        return job if claimed else None
    previous = job.worker
    if previous == worker or (previous and worker_alive(previous)):
        return None
    if connection.execute(_TAKE_OVER, {**params, "previous": previous}).rowcount != 1:
        return None
    return _claimed(connection, job_id)


def requeue(session: Session, job_id: str, worker: str | None, *, attempt_used: bool = True) -> bool:
    """Put a running job back in line (the caller puts it back in the fair line): its worker died, or
    could not serve it, or (``attempt_used=False``) handed it back while shutting down."""
    held_by = RenderJob.worker.is_(None) if worker is None else RenderJob.worker == worker
    attempts = RenderJob.attempts if attempt_used else RenderJob.attempts - 1
    return session.execute(
        update(RenderJob).where(RenderJob.id == job_id, RenderJob.status == "running", held_by)
        .values(status="queued", worker=None, progress=0, attempts=attempts, updated_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount == 1


def record_prompt(session: Session, job_id: str, prompt_id: str, variant: str, graph: dict[str, Any]) -> None:
    _transition(session, job_id, ("running",), comfy_prompt_id=prompt_id, variant=variant, graph=graph,
                submitted_at=utcnow())


def touch(session: Session, job_id: str) -> bool:
    """A heartbeat on the row (the job is being worked on); returns whether a cancel was requested."""
    return _unless_cancelled(session, job_id)


def record_progress(session: Session, job_id: str, percent: int, first: bool = False) -> bool:
    """Store progress (``first``: also that ComfyUI reported the attempt's first step, for the
    timing breakdown); returns whether a cancel was requested meanwhile."""
    values: dict[str, Any] = {"progress": max(0, min(100, percent))}
    if first:
        values["first_progress_at"] = utcnow()
    return _unless_cancelled(session, job_id, **values)


def _unless_cancelled(session: Session, job_id: str, **values: Any) -> bool:
    """``values`` on the running job unless its cancel was requested; whether it was. One statement
    when it was not: the flag is read only when the update found no running, uncancelled row."""
    if _transition(session, job_id, ("running",), uncancelled=True, **values):
        return False
    return cancel_requested(session, job_id)


_CANCEL_REQUESTED = select(_JOBS.c.cancel_requested).where(_JOBS.c.id == bindparam("job_id"))


def cancel_requested(session: Session, job_id: str) -> bool:
    return bool(session.connection().execute(_CANCEL_REQUESTED, {"job_id": job_id}).scalar())


def _final_values(status: str, finished_at: Any, error_code: str | None = None, error_class: str | None = None,
                  error_message: str | None = None) -> dict[str, Any]:
    """The columns every way of finishing a job writes (``finish_job``, the image that completes
    it, the cancel of a queued job): the final status, when (a time, or a bound parameter of a
    statement built once), the error (None unless it failed) and, for a success, all progress."""
    if status not in FINISHED_STATUSES:
        raise ValueError(f"not a final status: {status}")
    values: dict[str, Any] = {"status": status, "finished_at": finished_at, "error_code": error_code,
                              "error_class": error_class, "error_message": error_message}
    if status == "succeeded":
        values["progress"] = 100
    return values


_OUTPUT_COLUMNS = ("id", "job_id", "user_id", "index", "image_key", "thumbnail_key", "width", "height", "file_size",
                   "sha256", "created_at")
# INSERT ... SELECT <the row> WHERE NOT EXISTS (the job's row of that index): a repeat inserts nothing.
_INSERT_OUTPUT_ONCE = _OUTPUTS.insert().from_select(
    _OUTPUT_COLUMNS, select(*(bindparam(name, type_=_OUTPUTS.c[name].type) for name in _OUTPUT_COLUMNS)).where(
        ~exists().where(_OUTPUTS.c.job_id == bindparam("job_id"), _OUTPUTS.c.index == bindparam("index"))))
_DELETE_OUTPUT = _OUTPUTS.delete().where(_OUTPUTS.c.id == bindparam("output_id"))
# The job's delivered count from its rows, on a running job only (the row lock a finish waits for).
_DELIVERED = _JOBS.update().where(_JOBS.c.id == bindparam("job_id"), _JOBS.c.status == "running").values(
    images_delivered=select(func.count()).select_from(_OUTPUTS).where(_OUTPUTS.c.job_id == bindparam("job_id"))
    .scalar_subquery(), last_image_at=bindparam("now"), updated_at=bindparam("now"))
# The same for the image that completes the job: it also records the job's success.
_DELIVERED_LAST = _DELIVERED.values(_final_values("succeeded", bindparam("now")))
_OUTPUT_AT = select(RenderOutput).where(RenderOutput.job_id == bindparam("job_id"),
                                        RenderOutput.index == bindparam("index"))


def add_output(session: Session, job: ClaimedJob, file: OutputFile, *, completes: bool = False) -> RenderOutput | None:
    """Insert the output row for ``file.index`` once; a repeat returns the existing row.
    ``completes``: this image is the last the job needs, and the same update records the job
    succeeded (as ``finish_job`` would), so its last image and its end commit together.

    None when the job is no longer running (the reconciler finished it meanwhile): an image
    recorded after its job's settlement would never be charged. Two statements in the usual
    case: the insert (nothing when the unique ``(job_id, index)`` row exists), then the job's
    count and ``last_image_at``, only while it runs. That update takes the job's row lock: a
    finish that committed before it leaves it nothing to update, and the insert is deleted
    again in the same transaction (nothing of it commits); a finish after it waits for this
    transaction and then reads the new row.
    """
    now = utcnow()
    connection = session.connection()
    row = dict(id=file.output_id or uuid.uuid4().hex, job_id=job.id, user_id=job.user_id, index=file.index,
               image_key=file.image_key, thumbnail_key=file.thumbnail_key, width=file.width, height=file.height,
               file_size=file.file_size, sha256=file.sha256, created_at=now)
    inserted = connection.execute(_INSERT_OUTPUT_ONCE, row).rowcount == 1
    delivered = _DELIVERED_LAST if completes else _DELIVERED
    if connection.execute(delivered, {"job_id": job.id, "now": now}).rowcount != 1:
        if inserted:
            connection.execute(_DELETE_OUTPUT, {"output_id": row["id"]})
        return None
    if inserted:
        return RenderOutput(**row)
    return session.scalars(_OUTPUT_AT, {"job_id": job.id, "index": file.index}).one()


def finish_job(session: Session, job_id: str, status: str, *, error_code: str | None = None,
               error_class: str | None = None, error_message: str | None = None) -> bool:
    """Move a queued/running job to a final status; False if it had already finished."""
    return _transition(session, job_id, ("queued", "running"),
                       **_final_values(status, utcnow(), error_code, error_class, error_message))


def unsettled_jobs(session: Session, finished_before: datetime, limit: int = 200) -> list[RenderJob]:
    """Finished jobs whose credits are not settled yet, oldest first."""
    return _owing(session, RenderJob.settled_at, finished_before, limit)


def unannounced_jobs(session: Session, finished_before: datetime, limit: int = 200) -> list[RenderJob]:
    """Finished jobs whose final event was not published yet, oldest first."""
    return _owing(session, RenderJob.announced_at, finished_before, limit)


def _owing(session: Session, done_at: Any, finished_before: datetime, limit: int) -> list[RenderJob]:
    return list(session.scalars(select(RenderJob).where(
        done_at.is_(None), RenderJob.status.in_(FINISHED_STATUSES), RenderJob.finished_at < finished_before)
        .order_by(RenderJob.finished_at).limit(limit)))


def mark_settled(session: Session, job_id: str, at: datetime | None = None) -> bool:
    """Record that credits settled the finished job (now, or ``at``); False if it was recorded already."""
    return _mark_done(session, job_id, ("settled_at",), at)


def mark_announced(session: Session, job_id: str, at: datetime | None = None) -> bool:
    """Record that the finished job's final event was published; False if it was recorded already."""
    return _mark_done(session, job_id, ("announced_at",), at)


def mark_settled_and_announced(session: Session, job_id: str, at: datetime | None = None) -> bool:
    """Both marks in one statement (the worker's outbox, when credits and Redis took both); False
    if either was recorded already (then neither is changed: record them one by one)."""
    return _mark_done(session, job_id, ("settled_at", "announced_at"), at)


@cache
def _mark_statement(columns: tuple[str, ...]):
    return _JOBS.update().where(
        _JOBS.c.id == bindparam("job_id"), _JOBS.c.status.in_(FINISHED_STATUSES),
        *(_JOBS.c[name].is_(None) for name in columns)).values({name: bindparam("at") for name in columns})


def _mark_done(session: Session, job_id: str, columns: tuple[str, ...], at: datetime | None) -> bool:
    return session.connection().execute(_mark_statement(columns), {"job_id": job_id, "at": at or utcnow()}).rowcount == 1


def request_cancel(session: Session, job_id: str) -> str:
    """Cancel a queued job at once ("cancelled") or flag a running one ("requested"); the caller
    has checked who may. A finished job raises 409 JOB_FINISHED.
    """
    if _transition(session, job_id, ("queued",), cancel_requested=True, **_final_values("cancelled", utcnow())):
        return "cancelled"
    if _transition(session, job_id, ("running",), cancel_requested=True):
        return "requested"
    raise Conflict("This job has already finished.", code="JOB_FINISHED")


def keys_in_use(session: Session, candidates: list[str]) -> set[str]:
    """Which of the stored files ``candidates`` a render row still uses: an output's image or
    thumbnail, an upload, or a job's source (files are content-addressed, so identical images
    of different rows share a key). The gallery's works are asked separately."""
    used = set(session.scalars(select(RenderOutput.image_key).where(RenderOutput.image_key.in_(candidates))))
    used |= set(session.scalars(select(RenderOutput.thumbnail_key).where(RenderOutput.thumbnail_key.in_(candidates))))
    used |= set(session.scalars(select(RenderUpload.image_key).where(RenderUpload.image_key.in_(candidates))))
    used |= set(session.scalars(select(RenderJob.source_key).where(RenderJob.source_key.in_(candidates))))
    return used
