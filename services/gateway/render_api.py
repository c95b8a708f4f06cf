"""Render routes inside the gateway: admission (``POST /api/generate``), job queries and
cancel, the model catalog, and the internal output lookup the gallery uses.

Admission holds credits first, then commits the job row, and only after the commit
sends ``render.run_job`` by name; a failed insert gives the hold back.
"""
from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Any

from celery import Celery
from flask import Blueprint, Flask, current_app, request
from marshmallow import Schema, fields, validate
from sqlalchemy.exc import IntegrityError

from services.credits.client import CreditsClient
from services.render_worker import jobs
from services.render_worker.catalog import merged_choices, read_live_catalogs
from services.render_worker.models import JOB_STATUSES
from services.render_worker.workflows import Template, load_templates, validate_params
from shared.config import Settings
from shared.db import Database, after_commit
from shared.errors import BadRequest, Forbidden, NotFound, Unprocessable, ok
from shared.events import EventBus, redis_client
from shared.storage import LocalStorage
from shared.tasks import RENDER_RUN_JOB, make_celery
from shared.tokens import optional_user, require_user
from shared.web import SERVICE_TOKEN_HEADER, load_query

log = logging.getLogger(__name__)

bp = Blueprint("render", __name__)
IDEMPOTENCY_HEADER = "Idempotency-Key"


class JobListQuery(Schema):
    status = fields.String(validate=validate.OneOf(JOB_STATUSES))
    page = fields.Integer(load_default=1, validate=validate.Range(min=1))
    page_size = fields.Integer(data_key="pageSize", load_default=20, validate=validate.Range(min=1, max=100))


@dataclass
class RenderService:
    """Admission and queries of render jobs, as the gateway runs them."""

    settings: Settings
    db: Database
    celery: Celery
    credits: CreditsClient
    events: EventBus
    storage: LocalStorage
    templates: dict[str, Template]

    def _job_json(self, session, job) -> dict[str, Any]:
        return jobs.job_json(job, jobs.outputs_of(session, [job.id])[job.id], self.storage)

    def admit(self, user_id: int, body: Any, idempotency_key: str | None) -> tuple[dict[str, Any], int]:
        """Validate, hold credits, store the job, queue it after commit. Returns (response, status)."""
        if not isinstance(body, dict):
            raise Unprocessable("The parameters must be a JSON object.", details={"_schema": ["Must be an object."]})
        if idempotency_key is not None and not 0 < len(idempotency_key) <= 128:
            raise BadRequest("Idempotency-Key must be 1 to 128 characters.", code="INVALID_IDEMPOTENCY_KEY")
        if idempotency_key:
            existing = self._existing(user_id, idempotency_key)
            if existing is not None:
                return existing, 200
        raw = dict(body)
        workflow = raw.pop("workflow", "text2img")
        template = self.templates.get(workflow) if isinstance(workflow, str) else None
        if template is None:
            raise Unprocessable("Unknown workflow.", code="UNKNOWN_WORKFLOW", details={"workflow": ["Unknown workflow."]})
        catalogs = read_live_catalogs(self.events.redis)
        warnings = []
        if catalogs:
            choices = merged_choices(catalogs)
            model = raw.get("model")
            if isinstance(model, str) and model not in choices["checkpoints"]:
                raise Unprocessable("No live render worker holds this model.", code="MODEL_UNAVAILABLE",
                                    details={"model": [f"Not available: {model!r}."]})
            params = validate_params(template, raw, choices)
        else:
            params = validate_params(template, raw)
            warnings.append("No render worker is online; the job waits in the queue until one starts.")
        job_id = jobs.new_job_id()
        amount = template.price_per_image * int(params.get("batchSize", 1))
        self.credits.hold(user_id, job_id, amount, f"{template.name} × {params.get('batchSize', 1)}")
        try:
            with self.db.transaction() as session:
                job = jobs.create_job(session, job_id=job_id, user_id=user_id, template=template, params=params,
                                      idempotency_key=idempotency_key)
                after_commit(session, lambda: self.celery.send_task(RENDER_RUN_JOB, args=[job_id],
                                                                    queue=self.settings.render_queue))
        except BaseException as exc:
            self.credits.release(job_id, f"release:{job_id}")
            if isinstance(exc, IntegrityError) and idempotency_key:
                existing = self._existing(user_id, idempotency_key)  # a concurrent twin won the insert
                if existing is not None:
                    return existing, 200
            raise
        with self.db.transaction() as session:
            job = jobs.get_job(session, job_id)
            position = jobs.queue_position(session, job)
            data = {"job": self._job_json(session, job), "queuePosition": position}
        self.events.publish(user_id, "job.queued", {"jobId": job_id, "position": position}, job_id=job_id)
        if warnings:
            data["warnings"] = warnings
        return data, 202

    def _existing(self, user_id: int, key: str) -> dict[str, Any] | None:
        with self.db.transaction() as session:
            job = jobs.find_by_idempotency_key(session, user_id, key)
            if job is None:
                return None
            position = jobs.queue_position(session, job) if job.status == "queued" else None
            return {"job": self._job_json(session, job), "queuePosition": position}

    def list_jobs(self, user_id: int, status: str | None, page: int, page_size: int) -> dict[str, Any]:
        with self.db.transaction() as session:
            rows, total = jobs.list_user_jobs(session, user_id, status=status, page=page, page_size=page_size)
            outputs = jobs.outputs_of(session, [job.id for job in rows])
            items = [jobs.job_json(job, outputs[job.id], self.storage) for job in rows]
        return {"items": items, "page": page, "pageSize": page_size, "total": total}

    def get_job(self, user_id: int, job_id: str) -> dict[str, Any]:
        with self.db.transaction() as session:
            return self._job_json(session, jobs.get_user_job(session, user_id, job_id))

    def cancel(self, user_id: int, job_id: str) -> dict[str, Any]:
        """A queued job is cancelled now and refunded; a running one is flagged for its worker."""
        with self.db.transaction() as session:
            outcome = jobs.request_cancel(session, user_id, job_id)
        if outcome == "cancelled":
            released = self.credits.release(job_id, f"release:{job_id}").get("released", 0)
            self.events.publish(user_id, "job.cancelled", {"jobId": job_id, "refunded": released}, job_id=job_id)
        return self.get_job(user_id, job_id)

    def catalog(self) -> dict[str, Any]:
        catalogs = read_live_catalogs(self.events.redis)
        choices = merged_choices(catalogs)
        models = [{"name": name, "workers": [c["workerId"] for c in catalogs if name in c.get("checkpoints", [])]}
                  for name in choices["checkpoints"]]
        return {"models": models, "samplers": choices["samplers"], "schedulers": choices["schedulers"],
                "workflows": [template.public() for template in self.templates.values()],
                "liveWorkers": len(catalogs)}

    def output_record(self, output_id: str) -> dict[str, Any]:
        with self.db.transaction() as session:
            output = jobs.get_output(session, output_id)
            if output is None:
                raise NotFound("No such output.", code="OUTPUT_NOT_FOUND")
            return jobs.output_record(output, jobs.get_job(session, output.job_id))


def init_app(app: Flask, settings: Settings) -> None:
    """Bind the render domain to the gateway app and register its routes."""
    app.extensions["render"] = RenderService(
        settings=settings, db=Database(settings.render_database_url), celery=make_celery(settings, "gateway"),
        credits=CreditsClient(settings.credits_url, settings.service_token),
        events=EventBus(redis_client(settings.redis_url)), storage=LocalStorage(settings.media_dir),
        templates=load_templates())
    app.register_blueprint(bp)


def _service() -> RenderService:
    return current_app.extensions["render"]


@bp.post("/api/generate")
def generate():
    claims = require_user()
    body = request.get_json(silent=True)
    if body is None:
        raise BadRequest("The request body must be JSON.", code="INVALID_JSON")
    data, status = _service().admit(claims.user_id, body, request.headers.get(IDEMPOTENCY_HEADER))
    return ok(data, status)


@bp.get("/api/jobs")
def list_jobs():
    claims = require_user()
    query = load_query(JobListQuery())
    return ok(_service().list_jobs(claims.user_id, query.get("status"), query["page"], query["page_size"]))


@bp.get("/api/jobs/<job_id>")
def get_job(job_id: str):
    return ok(_service().get_job(require_user().user_id, job_id))


@bp.delete("/api/jobs/<job_id>")
def cancel_job(job_id: str):
    return ok(_service().cancel(require_user().user_id, job_id))


@bp.get("/api/models")
def models():
    optional_user()
    return ok(_service().catalog())


@bp.get("/internal/outputs/<output_id>")
def internal_output(output_id: str):
    presented = request.headers.get(SERVICE_TOKEN_HEADER, "")
    if not hmac.compare_digest(presented, current_app.config["SETTINGS"].service_token):
        raise Forbidden("This route accepts calls from the platform only.", code="SERVICE_TOKEN_REQUIRED")
    return ok(_service().output_record(output_id))
