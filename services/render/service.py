"""The render domain's service: admission, job queries, cancel, retry,
uploads, the model catalog and the internal lookups other services use.

Admission validates against the workflow's declaration and the live catalog, then —
under a per-user Redis lock, so the queue limit holds under concurrency — holds the
credits (credits prices the job), commits the job row, and only after the commit puts
it in the fair-share scheduler's line (``services.render.scheduler``), which releases it
to a worker when one has a free slot. A failed insert gives the hold back.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis as redis_lib
from sqlalchemy.exc import IntegrityError

from services.auth.client import AuthClient
from services.credits.client import CreditsClient
from services.gallery.client import GalleryClient
from services.render import cancel_signal, fleet, jobs
from services.render import metrics as render_metrics
from services.render.catalog import MODEL_KINDS, merged_choices, read_live_catalogs, workflow_names
from services.render.config import RenderConfig
from services.render.dispatch import capacity, estimated_start_seconds, queue_name
from services.render.models import RenderJob, RenderOutput, RenderUserShare
from services.render.scheduler import BATCH, INTERACTIVE, LANES, FairQueue, entry_for
from services.render.registry import ModelRegistry, Presets
from services.render.workflows import Template, TemplateStore, validate_params
from shared.config import Settings
from shared.db import Database, isoformat, utcnow
from shared.errors import BadRequest, Conflict, Forbidden, NotFound, ServiceError, ServiceUnavailable, Unprocessable
from shared.events import EventBus
from shared.offload import run_blocking
from shared.storage import Storage

from services.render.pricing import PricingCache
from services.render.outbox import JobOutbox
from services.render.schemas import job_json, job_summary, output_record, upload_json
from services.render.uploads import PayloadTooLarge, Source, inspect_image, resolve_source, store_upload
from services.safety.client import ContentFilter

log = logging.getLogger(__name__)

ADMISSION_LOCK_SECONDS = 15
# Live worker catalogs are read with a SCAN; one read per second per process is plenty.
CATALOG_CACHE_SECONDS = 1.0


class QueueLimit(ServiceError):
    status, code, message = 429, "QUEUE_LIMIT", "You have too many jobs waiting or running."


@dataclass(frozen=True)
class AccountLimits:
    """A service account's own limits (integrations keeps them): its queued + running jobs
    instead of ``RENDER_USER_ACTIVE_LIMIT``, the workflows it may run (None: all), and the
    scheduler's lane its jobs wait in (``batch`` unless an administrator chose ``interactive``)."""

    active_limit: int
    workflows: frozenset[str] | None = None
    lane: str = BATCH


class AdmissionExpired(ServiceUnavailable):
    code = "ADMISSION_EXPIRED"
    message = "This request waited too long to be admitted, so nothing was charged; try again."


@dataclass
class RenderService:
    settings: Settings
    config: RenderConfig
    db: Database
    fair: FairQueue
    credits: CreditsClient
    gallery: GalleryClient
    events: EventBus
    storage: Storage
    templates: TemplateStore
    pricing: PricingCache
    outbox: JobOutbox
    auth: AuthClient
    models: ModelRegistry
    presets: Presets
    content_filter: ContentFilter
    _catalogs: tuple[float, list[dict]] = (float("-inf"), [])

    def live_catalogs(self) -> list[dict]:
        read_at, catalogs = self._catalogs
        if time.monotonic() - read_at > CATALOG_CACHE_SECONDS:
            catalogs = read_live_catalogs(self.redis)
            self._catalogs = (time.monotonic(), catalogs)
        return catalogs

    @property
    def redis(self) -> redis_lib.Redis:
        return self.events.redis

    @property
    def retention(self) -> timedelta:
        """How long outputs not saved as works are kept."""
        return timedelta(days=self.config.output_retention_days)

    # -- admission --------------------------------------------------------------------
    def admit(self, user_id: int, body: Any, idempotency_key: str | None, bearer: str | None,
              limits: AccountLimits | None = None, received_at: float | None = None,
              role: str | None = None) -> tuple[dict, int]:
        """Validate, hold credits, store the job, queue it after commit. Returns (data, status):
        202 for a new job, 200 for the replay of an idempotency key.

        The one admission path: a browser's ``POST /api/generate``, an API token's, and the
        queue API's (``POST /internal/jobs``, on behalf of a service account, with its limits).
        ``received_at`` (Unix seconds) starts the admission deadline: a request that waited
        longer than ``RENDER_ADMISSION_DEADLINE_SECONDS`` (its client has most likely given
        up) is refused before anything is held. A service account's job waits in the batch
        lane, a person's in the interactive lane, with the user's (or ``role``'s) weight."""
        if not isinstance(body, dict):
            raise Unprocessable("The parameters must be a JSON object.", details={"_schema": ["Must be an object."]})
        if idempotency_key is not None and not 0 < len(idempotency_key) <= 128:
            raise BadRequest("Idempotency-Key must be 1 to 128 characters.", code="INVALID_IDEMPOTENCY_KEY")
        if idempotency_key and (existing := self._existing(user_id, idempotency_key)) is not None:
            return existing, 200
        raw = dict(body)
        template = self._template(raw.pop("workflow", "text2img"))
        if limits is not None and limits.workflows is not None and template.name not in limits.workflows:
            raise Forbidden("This account may not run this workflow.", code="WORKFLOW_NOT_ALLOWED",
                            details={"workflow": template.name, "allowed": sorted(limits.workflows)})
        expected_cost = raw.pop("expectedCost", None)
        if expected_cost is not None and (isinstance(expected_cost, bool) or not isinstance(expected_cost, int)):
            raise Unprocessable("Some fields are invalid.", details={"expectedCost": ["Must be an integer."]})
        catalogs = self.live_catalogs()
        if not any(template.name in workflow_names(c) for c in catalogs):
            raise ServiceUnavailable("No render worker can run this workflow right now; try again shortly.",
                                     code="RENDER_UNAVAILABLE")
        choices = merged_choices(catalogs, template.name)
        self._check_models(template, raw, choices)
        params = validate_params(template, raw, choices)
        self._check_text(template, params, user_id)
        source = self._source(template, params, user_id, bearer)
        active_limit = limits.active_limit if limits is not None else self.config.user_active_limit
        deadline = None if received_at is None else received_at + self.config.admission_deadline_seconds
        lane = limits.lane if limits is not None else INTERACTIVE
        return self._enqueue(user_id, template, params, source, idempotency_key, expected_cost, catalogs,
                             active_limit, deadline, lane, role)

    def _template(self, name: Any) -> Template:
        template = self.templates.get(name) if isinstance(name, str) else None
        if template is None:
            raise Unprocessable("Unknown workflow.", code="UNKNOWN_WORKFLOW", details={"workflow": ["Unknown workflow."]})
        return template

    @staticmethod
    def _check_models(template: Template, raw: dict[str, Any], choices: dict[str, list[str]]) -> None:
        """422 MODEL_UNAVAILABLE for a model no live worker (able to run the workflow) holds."""
        missing = {p["name"]: [f"No live render worker holds {raw[p['name']]!r}."] for p in template.parameters
                   if p.get("from") in MODEL_KINDS and isinstance(raw.get(p["name"]), str)
                   and raw[p["name"]] not in choices.get(p["from"], [])}
        if missing:
            raise Unprocessable("No live render worker holds this model.", code="MODEL_UNAVAILABLE", details=missing)

    def _check_text(self, template: Template, params: dict[str, Any], user_id: int) -> None:
        """422 CONTENT_REJECTED for free text (prompt, negative prompt) matching a ``block``
        entry, before anything is held; a ``review`` match is recorded and the job goes on
        (the gallery keeps its works from the public until a moderator approves)."""
        fields = {p["name"]: params[p["name"]] for p in template.parameters
                  if p["type"] == "string" and "from" not in p and isinstance(params.get(p["name"]), str)}
        self.content_filter.check(fields, source="render", actor_id=user_id, subject=f"workflow:{template.name}")

    def _source(self, template: Template, params: dict[str, Any], user_id: int, bearer: str | None) -> Source | None:
        names = [n for n in template.image_parameters if n in params]
        if not names:
            return None
        with self.db.read() as session:
            source = resolve_source(session, self.gallery, self.storage, user_id, params[names[0]], bearer, names[0])
        scale = int(params.get("scale", 1))
        if source.width * source.height * scale * scale > template.max_pixels:
            raise Unprocessable("The result would be too large.", code="IMAGE_TOO_LARGE", details={
                names[0]: [f"{source.width}x{source.height} × {scale} exceeds {template.max_pixels} pixels."]})
        return source

    def _enqueue(self, user_id: int, template: Template, params: dict[str, Any], source: Source | None,
                 idempotency_key: str | None, expected_cost: int | None, catalogs: list[dict],
                 active_limit: int, deadline: float | None, lane: str,
                 role: str | None) -> tuple[dict[str, Any], int]:
        lock = self.redis.lock(f"render:admit:{user_id}", timeout=ADMISSION_LOCK_SECONDS, blocking_timeout=10)
        if not lock.acquire():
            raise ServiceUnavailable("Too many submissions at once; try again.", code="ADMISSION_BUSY")
        try:
            if idempotency_key and (existing := self._existing(user_id, idempotency_key)) is not None:
                return existing, 200
            if deadline is not None and time.time() > deadline:
                raise AdmissionExpired()
            with self.db.read_connection() as connection:  # Core, no ORM session: the hot path
                active, share, running = jobs.admission_read(connection, user_id)
            weight = share if share is not None else self.config.role_weight(role)
            if active >= active_limit:
                raise QueueLimit(f"You already have {active} jobs waiting or running; the limit is {active_limit}.",
                                 details={"active": active, "limit": active_limit})
            job_id = jobs.new_job_id()
            images = int(params.get("batchSize", 1))
            hold = self.credits.hold(user_id, job_id, template.name, images, f"{template.name} × {images}",
                                     expected_cost)
            queue = queue_name(self.config.queue_prefix, template.name)
            try:
                with self.db.engine.begin() as connection:
                    job = jobs.create_job(connection, job_id=job_id, user_id=user_id, template=template,
                                          params=params, price_per_image=int(hold["pricePerImage"]), queue=queue,
                                          source_key=source.image_key if source else None,
                                          source_ref=source.ref if source else None,
                                          idempotency_key=idempotency_key, lane=lane, share_weight=weight)
                    entry = entry_for(job, template)
            except BaseException as exc:
                self.credits.release(job_id, f"release:{job_id}")
                if idempotency_key and isinstance(exc, IntegrityError):  # a concurrent twin won the insert
                    if (existing := self._existing(user_id, idempotency_key)) is not None:
                        return existing, 200
                raise
            place = None  # the job's place in line as it enters it: the answer's queuePosition
            try:  # in line first (the scheduler may release it at once), then the lock and the answer
                place = self.fair.enqueue_placed(entry, self.config.batch_min_share)
            except redis_lib.RedisError as exc:  # the row is the truth: the scheduler finds it on its next sync
                log.warning("job %s not put in line now (%s); the scheduler will find it", job_id, exc)
        finally:
            lock.release()
        data = self._position({"job": job_json(job, [], self.storage, self.retention)}, job.status, job_id,
                              template, running, catalogs, place)
        self.events.publish(user_id, "job.queued", {"jobId": job_id, "position": data["queuePosition"],
                                                    "estimatedStartSeconds": data["estimatedStartSeconds"]},
                            job_id=job_id)
        return data, 202

    def _job_with_position(self, session, job: RenderJob, template: Template | None,
                           catalogs: list[dict] | None = None,
                           outputs: list[RenderOutput] | None = None) -> dict[str, Any]:
        job_data = job_json(job, outputs, self.storage, self.retention) if outputs is not None else self._job_json(session, job)
        running = jobs.running_count_all(session) if job.status == "queued" else 0  # only a queued job's is used
        return self._position({"job": job_data}, job.status, job.id, template, running, catalogs)

    def _position(self, data: dict[str, Any], status: str, job_id: str, template: Template | None,
                  running: int, catalogs: list[dict] | None = None, place: int | None = None) -> dict[str, Any]:
        """``data`` with the job's place in the scheduler's line and its estimated start (None when
        it does not wait, or Redis cannot say). ``running``: the running jobs, read with the
        caller's own statements; ``place``: known already (admission's, from the enqueue), else
        read from the line."""
        data.update(queuePosition=None, estimatedStartSeconds=None, estimatedStartAt=None)
        if status != "queued":
            return data
        try:
            position = place if place is not None else self.fair.position(job_id, self.config.batch_min_share)
        except redis_lib.RedisError:
            return data
        position = 0 if position is None else position  # released: next to start
        catalogs = catalogs if catalogs is not None else self.live_catalogs()
        seconds = estimated_start_seconds(position, running, capacity(catalogs),
                                          template.estimated_seconds if template else 10.0)
        data.update(queuePosition=position, estimatedStartSeconds=seconds,
                    estimatedStartAt=isoformat(utcnow() + timedelta(seconds=seconds)) if seconds is not None
                    else None)
        return data

    def _existing(self, user_id: int, key: str) -> dict[str, Any] | None:
        with self.db.read() as session:
            job = jobs.find_by_idempotency_key(session, user_id, key)
            if job is None:
                return None
            return self._job_with_position(session, job, self.templates.get(job.workflow))

    def _job_json(self, session, job: RenderJob) -> dict[str, Any]:
        return job_json(job, jobs.outputs_of(session, [job.id])[job.id], self.storage, self.retention)

    # -- jobs -------------------------------------------------------------------------
    def list_jobs(self, user_id: int | None, filters: jobs.JobFilter, page: int, page_size: int) -> dict[str, Any]:
        """One user's jobs, or every user's (``user_id`` None, for administrators, with each
        owner's ``userId``, ``username`` and ``displayName``, read from auth in one call)."""
        with self.db.read() as session:
            rows, total = jobs.list_jobs(session, user_id, filters, page=page, page_size=page_size)
            outputs = jobs.outputs_of(session, [job.id for job in rows])
            items = [job_json(job, outputs[job.id], self.storage, self.retention) for job in rows]
        if user_id is None:
            owners = self._owners(sorted({job.user_id for job in rows}))
            for item, job in zip(items, rows):
                owner = owners.get(job.user_id, {})
                item.update(userId=job.user_id, username=owner.get("username"), displayName=owner.get("displayName"),
                            timings=render_metrics.timings(job))
        return {"items": items, "page": page, "pageSize": page_size, "total": total}

    def _owners(self, user_ids: list[int]) -> dict[int, dict[str, Any]]:
        """Directory entries of the jobs' owners; empty (with a warning) when auth cannot say."""
        try:
            return self.auth.users(user_ids)
        except (ServiceError, KeyError, TypeError, ValueError) as exc:
            log.warning("owners of %s jobs unavailable (%s); listed by id", len(user_ids),
                        getattr(exc, "code", exc.__class__.__name__))
            return {}

    def get_job(self, user_id: int, job_id: str) -> dict[str, Any]:
        with self.db.read() as session:
            job = jobs.get_user_job(session, user_id, job_id)
            data = self._job_with_position(session, job, self.templates.get(job.workflow))
        return {**data["job"], "queuePosition": data["queuePosition"],
                "estimatedStartSeconds": data["estimatedStartSeconds"]}

    def check_job_owner(self, user_id: int, job_id: str) -> None:
        """NotFound (JOB_NOT_FOUND) unless the job is the user's."""
        with self.db.read() as session:
            jobs.get_user_job(session, user_id, job_id)

    def cancel(self, user_id: int, job_id: str) -> dict[str, Any]:
        """The owner cancels: a queued job is cancelled now and refunded; a running one is flagged
        for its worker, which removes or interrupts its prompt and refunds what was not delivered. A
        credits outage does not undo the cancel: the refund (and the event) is then left to the reconciler."""
        with self.db.transaction() as session:
            job = jobs.get_user_job(session, user_id, job_id)
            outcome = jobs.request_cancel(session, job_id)
        self._cancelled(job, outcome)
        return self.get_job(user_id, job_id)

    # -- the fleet (operators) ----------------------------------------------------------
    def workers(self) -> dict[str, Any]:
        """Every render worker seen lately, live or dead (``services.render.fleet``)."""
        try:
            return {"items": fleet.list_workers(self.redis)}
        except redis_lib.RedisError as exc:
            raise ServiceUnavailable("The worker registry (Redis) does not answer.", code="REDIS_UNAVAILABLE") from exc

    def drain_worker(self, name: str, drained: bool) -> dict[str, Any]:
        """Ask the worker ``name`` (its node name ``<--name>@<host>``, or its ``--name`` when no other
        worker has it) to stop consuming (it obeys on its next heartbeat and stays alive, finishing
        its jobs) or to consume again."""
        try:
            nodes = fleet.nodes_named(self.redis, name)
            if not nodes:
                raise NotFound("No render worker of that name has been seen.", code="WORKER_NOT_FOUND")
            if len(nodes) > 1:
                raise Conflict("Several render workers have that name: name one by its node (name@host).",
                               code="WORKER_AMBIGUOUS", details={"nodes": nodes})
            fleet.set_drain(self.redis, nodes[0], drained)
            worker = next(w for w in fleet.list_workers(self.redis) if w["node"] == nodes[0])
        except redis_lib.RedisError as exc:
            raise ServiceUnavailable("The worker registry (Redis) does not answer.", code="REDIS_UNAVAILABLE") from exc
        except StopIteration:
            raise NotFound("No render worker of that name has been seen.", code="WORKER_NOT_FOUND") from None
        log.info("render worker %s %s by an administrator", nodes[0], "drained" if drained else "resumed")
        return {"worker": worker}

    def admin_cancel(self, job_id: str) -> dict[str, Any]:
        """An administrator cancels any user's job, refunded as the owner's own cancel is."""
        with self.db.transaction() as session:
            job = jobs.get_job(session, job_id)
            if job is None:
                raise NotFound("No such job.", code="JOB_NOT_FOUND")
            owner = job.user_id
            outcome = jobs.request_cancel(session, job_id)
        self._cancelled(job, outcome)
        return {**self.get_job(owner, job_id), "userId": owner}

    def _cancelled(self, job: RenderJob, outcome: str) -> None:
        if outcome == "requested":  # a running job: its worker stops it
            cancel_signal.send(self.redis, job.id)
        if outcome == "cancelled":  # a queued job: finished here (a running one by its worker)
            render_metrics.job_finished(job, "cancelled", None)
            try:
                self.fair.remove(job.id)
            except redis_lib.RedisError:
                pass  # the scheduler drops entries of finished jobs on its next sync
            self.outbox.complete(job.id)

    def retry(self, user_id: int, job_id: str, idempotency_key: str | None, bearer: str | None,
              limits: AccountLimits | None = None, received_at: float | None = None,
              role: str | None = None) -> tuple[dict, int]:
        """A new job with the same workflow and parameters (the same seed: the same images)."""
        with self.db.read() as session:
            job = jobs.get_user_job(session, user_id, job_id)
            body = {"workflow": job.workflow, **job.params}
        return self.admit(user_id, body, idempotency_key, bearer, limits, received_at, role)

    # -- fair share -------------------------------------------------------------------
    def set_share(self, admin_id: int, user_id: int, weight: float | None) -> dict[str, Any]:
        """An administrator sets one user's weight (None: back to the role's); it applies to the
        jobs the user submits from now on. NotFound (USER_NOT_FOUND) for a user auth does not know."""
        if self.auth.user(user_id) is None:
            raise NotFound("No such user.", code="USER_NOT_FOUND")
        with self.db.transaction() as session:
            share = session.get(RenderUserShare, user_id)
            if weight is None:
                if share is not None:
                    session.delete(share)
            elif share is None:
                session.add(RenderUserShare(user_id=user_id, weight=weight, updated_by=admin_id))
            else:
                share.weight, share.updated_by = weight, admin_id
        return {"userId": user_id, "weight": weight}

    def shares(self) -> dict[str, Any]:
        """The scheduler's state for administrators: role weights, users' own weights, and who
        waits in which lane (with each user's weight and waiting jobs)."""
        waiting: dict[tuple[int, str], dict[str, Any]] = {}
        for lane in LANES:
            for entry, _ in self.fair.waiting(lane, limit=10_000):
                row = waiting.setdefault((entry.user_id, lane), {"userId": entry.user_id, "lane": lane,
                                                                 "weight": entry.weight, "waiting": 0})
                row["waiting"] += 1
        with self.db.read() as session:
            users = [{"userId": s.user_id, "weight": s.weight}
                     for s in session.query(RenderUserShare).order_by(RenderUserShare.user_id)]
        rows = sorted(waiting.values(), key=lambda r: (r["lane"], -r["waiting"], r["userId"]))
        owners = self._owners(sorted({row["userId"] for row in rows + users})[:100])
        for row in rows + users:  # names for the console; by id alone when auth cannot say
            owner = owners.get(row["userId"], {})
            row.update(username=owner.get("username"), displayName=owner.get("displayName"))
        return {"roleWeights": dict(self.config.share_weights), "batchMinShare": self.config.batch_min_share,
                "affinityWaitSeconds": self.config.affinity_wait_seconds, "users": users, "waiting": rows}

    # -- uploads ----------------------------------------------------------------------
    def upload(self, user_id: int, data: bytes) -> dict[str, Any]:
        if len(data) > self.config.upload_max_bytes:
            raise PayloadTooLarge(f"Uploads are limited to {self.config.upload_max_bytes} bytes.")
        image = run_blocking(inspect_image, data)  # a full decode: off the gateway's event loop
        with self.db.transaction() as session:
            upload = store_upload(session, self.storage, user_id, data, image)
            return upload_json(upload, self.storage)

    # -- catalog ----------------------------------------------------------------------
    def catalog(self) -> dict[str, Any]:
        """What the live workers offer, described by the model registry, with the prompt presets
        and how long unsaved outputs are kept."""
        catalogs = self.live_catalogs()
        choices = merged_choices(catalogs)
        prices = self.pricing.prices()
        described = self.models.describe(sorted({name for kind in MODEL_KINDS for name in choices[kind]}))
        models = [{**described[name], "kind": kind, "workers": sum(1 for c in catalogs if name in c.get(kind, []))}
                  for kind in MODEL_KINDS for name in choices[kind]]
        workflows = []
        for template in self.templates.all().values():
            entry = template.public(prices.get(template.name))
            entry["workers"] = sum(1 for c in catalogs if template.name in workflow_names(c))
            workflows.append(entry)
        return {"models": models, "builtinVaes": choices["builtin_vaes"], "samplers": choices["samplers"],
                "schedulers": choices["schedulers"], "workflows": workflows, **self.presets.lists(),
                "outputRetentionDays": self.config.output_retention_days, "liveWorkers": len(catalogs),
                "workers": [{"workerId": c.get("workerId"), "comfyuiVersion": c.get("comfyuiVersion"),
                             "devices": c.get("devices", []), "workflows": workflow_names(c),
                             "slots": c.get("slots"), "updatedAt": c.get("updatedAt")} for c in catalogs]}

    # -- internal ---------------------------------------------------------------------
    def output_record(self, output_id: str) -> dict[str, Any]:
        with self.db.read() as session:
            output = jobs.get_output(session, output_id)
            if output is None:
                raise NotFound("No such output.", code="OUTPUT_NOT_FOUND")
            return output_record(output, jobs.get_job(session, output.job_id))

    def internal_job(self, job_id: str) -> dict[str, Any]:
        with self.db.read() as session:
            job = jobs.get_job(session, job_id)
            if job is None:
                raise NotFound("No such job.", code="JOB_NOT_FOUND")
            return {"id": job.id, "userId": job.user_id, "status": job.status,
                    "settled": job.settled_at is not None, "idempotencyKey": job.idempotency_key}

    def job_summaries(self, job_ids: list[str]) -> dict[str, Any]:
        """What the credits statement shows of each known job among ``job_ids``."""
        with self.db.read() as session:
            rows = jobs.jobs_by_id(session, job_ids)
            outputs = jobs.outputs_of(session, [job.id for job in rows])
            return {"items": [job_summary(job, outputs[job.id], self.storage) for job in rows]}

    def job_outputs(self, job_id: str) -> dict[str, Any]:
        with self.db.read() as session:
            job = jobs.get_job(session, job_id)
            if job is None:
                raise NotFound("No such job.", code="JOB_NOT_FOUND")
            outputs: list[RenderOutput] = jobs.outputs_of(session, [job_id])[job_id]
            return {"items": [output_record(output, job) for output in outputs]}

