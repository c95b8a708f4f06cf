"""The render domain's routes (mounted by the gateway): ``/api/generate``, ``/api/jobs*``,
``/api/admin/jobs*``, ``/api/admin/models*``, ``/api/admin/workers*``, ``/api/admin/render/shares*``, ``/api/admin/presets``,
``/api/uploads``, ``/api/models``, and
the service-token-only ``/internal/outputs/<id>``, ``/internal/jobs`` (GET by ids; POST: admission on behalf
of a service account), ``/internal/jobs/<id>`` and ``/internal/jobs/<id>/outputs``. API tokens reach the user
routes with the scope ``generate``."""
from __future__ import annotations


from flask import Blueprint, current_app, request

from shared.errors import BadRequest, Forbidden, ok
from shared.openapi import doc
from shared.secret_compare import same_secret
from shared.tokens import bearer_token, optional_user, require_admin, require_user
from shared.web import SERVICE_TOKEN_HEADER, load_json, load_query, request_received_at

from services.render.accounts import ServiceAccountLimits
from services.render.registry import ModelRegistry, Presets
from services.render.schemas import (InternalAdmissionSchema, JobIdsQuery, JobListQuery, ModelEntrySchema,
                                     PresetsSchema, ShareSchema, job_filter)
from services.render.service import AccountLimits, RenderService
from services.render.uploads import PayloadTooLarge

bp = Blueprint("render", __name__)
IDEMPOTENCY_HEADER = "Idempotency-Key"
UPLOAD_FIELDS = ("image", "file")
SCOPE = "generate"


def _service() -> RenderService:
    return current_app.extensions["render"]


def _models() -> ModelRegistry:
    return current_app.extensions["render"].models


def _presets() -> Presets:
    return current_app.extensions["render"].presets


def _limits() -> ServiceAccountLimits:
    return current_app.extensions["render_account_limits"]


def _require_service_token() -> None:
    presented = request.headers.get(SERVICE_TOKEN_HEADER, "")
    if not same_secret(presented, current_app.config["SETTINGS"].service_token):
        raise Forbidden("This route accepts calls from the platform only.", code="SERVICE_TOKEN_REQUIRED")


def _json_body():
    body = request.get_json(silent=True)
    if body is None:
        raise BadRequest("The request body must be JSON.", code="INVALID_JSON")
    return body


@bp.post("/api/generate")
@doc("Admit a render job: hold its credits and queue it", auth="user", scope=SCOPE, status=202,
     raw_body="The workflow's parameters (prompt, negativePrompt, model, width, height, batchSize, steps, "
              "cfgScale, seed, sampler, scheduler, ...; see GET /api/models). Optional header Idempotency-Key.",
     errors={400: "INVALID_IDEMPOTENCY_KEY", 402: "INSUFFICIENT_CREDITS", 409: "PRICE_CHANGED",
             422: "UNKNOWN_WORKFLOW, MODEL_UNAVAILABLE, IMAGE_TOO_LARGE, CONTENT_REJECTED (prompt or negative prompt matches the term list; nothing is held)", 429: "QUEUE_LIMIT, RATE_LIMITED",
             503: "RENDER_UNAVAILABLE, ADMISSION_BUSY, ADMISSION_EXPIRED, SERVICE_UNAVAILABLE"},
     description="202 with the queued job; the replay of an Idempotency-Key answers 200 with the same job. "
                 "A request that waited longer than the admission deadline is refused (503 ADMISSION_EXPIRED) "
                 "with nothing charged.")
def generate():
    claims = require_user(scope=SCOPE)
    data, status = _service().admit(claims.user_id, _json_body(), request.headers.get(IDEMPOTENCY_HEADER),
                                    bearer_token(), _limits().for_caller(claims),
                                    request_received_at(), claims.role)
    return ok(data, status)


@bp.get("/api/jobs")
@doc("The caller's jobs, newest first", auth="user", scope=SCOPE, query=JobListQuery,
     description="Filters: status, workflow, model (the main model's file name), search (every word must "
                 "occur in the prompt).")
def list_jobs():
    claims = require_user(scope=SCOPE)
    query = load_query(JobListQuery())
    return ok(_service().list_jobs(claims.user_id, job_filter(query), query["page"], query["page_size"]))


@bp.get("/api/admin/jobs")
@doc("Every user's jobs, newest first (the render fleet's queue and running jobs), with each owner's "
     "userId, username and displayName", auth="admin", query=JobListQuery)
def list_all_jobs():
    require_admin()
    query = load_query(JobListQuery())
    return ok(_service().list_jobs(None, job_filter(query), query["page"], query["page_size"]))


@bp.delete("/api/admin/jobs/<job_id>")
@doc("Cancel any user's job, refunded as the owner's cancel is", auth="admin",
     errors={404: "JOB_NOT_FOUND", 409: "JOB_FINISHED"})
def admin_cancel_job(job_id: str):
    require_admin()
    return ok(_service().admin_cancel(job_id))


@bp.get("/api/admin/render/shares")
@doc("The fair-share scheduler: role weights, users' own weights, and the jobs waiting per user and lane",
     auth="admin")
def admin_shares():
    require_admin()
    return ok(_service().shares())


@bp.put("/api/admin/render/shares/<id:user_id>")
@doc("Set one user's fair-share weight (null: back to the role's weight); applies to jobs submitted "
     "afterwards", auth="admin", body=ShareSchema, errors={404: "USER_NOT_FOUND", 503: "AUTH_UNAVAILABLE"})
def admin_set_share(user_id: int):
    admin = require_admin()
    return ok(_service().set_share(admin.user_id, user_id, load_json(ShareSchema())["weight"]))


@bp.get("/api/jobs/<job_id>")
@doc("One of the caller's jobs with its outputs", auth="user", scope=SCOPE, errors={404: "JOB_NOT_FOUND"})
def get_job(job_id: str):
    return ok(_service().get_job(require_user(scope=SCOPE).user_id, job_id))


@bp.delete("/api/jobs/<job_id>")
@doc("Cancel a job (a queued one is refunded at once)", auth="user", scope=SCOPE,
     errors={404: "JOB_NOT_FOUND", 409: "JOB_FINISHED"})
def cancel_job(job_id: str):
    return ok(_service().cancel(require_user(scope=SCOPE).user_id, job_id))


@bp.post("/api/jobs/<job_id>/retry")
@doc("Run a job's parameters again as a new job", auth="user", scope=SCOPE, status=202,
     errors={402: "INSUFFICIENT_CREDITS", 404: "JOB_NOT_FOUND", 429: "QUEUE_LIMIT",
             503: "RENDER_UNAVAILABLE, ADMISSION_EXPIRED"})
def retry_job(job_id: str):
    claims = require_user(scope=SCOPE)
    data, status = _service().retry(claims.user_id, job_id, request.headers.get(IDEMPOTENCY_HEADER), bearer_token(),
                                    _limits().for_caller(claims),
                                    request_received_at(), claims.role)
    return ok(data, status)


@bp.post("/api/uploads")
@doc("Upload a source image for image-to-image workflows", auth="user", scope=SCOPE, status=201,
     multipart={"image": "The picture (the field may also be named 'file')"},
     errors={400: "NO_FILE", 413: "PAYLOAD_TOO_LARGE", 422: "INVALID_IMAGE"})
def upload():
    claims = require_user(scope=SCOPE)
    limit = _service().config.upload_max_bytes
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        raise PayloadTooLarge(f"Uploads are limited to {limit} bytes.")
    part = next((request.files[name] for name in UPLOAD_FIELDS if name in request.files), None)
    if part is None:
        raise BadRequest("Send the image as multipart form data in the field 'image'.", code="NO_FILE")
    data = part.stream.read(limit + 1)
    return ok({"upload": _service().upload(claims.user_id, data)}, 201)


@bp.get("/api/models")
@doc("What the live render workers offer: models (with the registry's displayNames, description, previewUrl, "
     "recommended), samplers, schedulers, workflows (parameters with labels and help), stylePresets, "
     "negativePresets, outputRetentionDays", auth="optional", scope=SCOPE)
def models():
    optional_user(scope=SCOPE)
    return ok(_service().catalog())


@bp.get("/api/admin/models")
@doc("Every model the registry describes", auth="admin")
def admin_models():
    require_admin()
    return ok({"items": _models().entries()})


@bp.get("/api/admin/models/<path:name>")
@doc("The registry's entry of a model (blank when nobody described it)", auth="admin")
def admin_model(name: str):
    require_admin()
    return ok({"model": _models().get(name)})


@bp.put("/api/admin/models/<path:name>")
@doc("Describe a model: displayNames {zh, en}, description {zh, en}, recommended settings, and a preview "
     "made from an image you can use as a source (\"upload:<id>\", \"output:<id>\", \"work:<id>\"; null "
     "removes it)", auth="admin", body=ModelEntrySchema, errors={422: "SOURCE_NOT_FOUND"})
def admin_describe_model(name: str):
    admin = require_admin()
    if not 0 < len(name) <= 255:
        raise BadRequest("A model name is 1 to 255 characters.", code="INVALID_MODEL_NAME")
    changes = load_json(ModelEntrySchema())
    return ok({"model": _models().put(admin.user_id, name, changes, bearer_token())})


@bp.get("/api/admin/presets")
@doc("The style and negative prompt presets", auth="admin")
def admin_presets():
    require_admin()
    return ok(_presets().lists())


@bp.put("/api/admin/presets")
@doc("Replace the style presets, the negative presets, or both (each list whole, in order)", auth="admin",
     body=PresetsSchema)
def admin_replace_presets():
    require_admin()
    return ok(_presets().replace(load_json(PresetsSchema())))


@bp.get("/api/admin/workers")
@doc("The render workers seen lately: node (name@host, the worker's identity), name, host, workerId, "
     "comfyuiUrl, comfyuiVersion, comfyuiReachable, devices (VRAM), models by kind, loadedModel, workflows, "
     "slots, inFlight, done, failed, lastHeartbeat, state (active, draining, dead) and drainRequested", auth="admin",
     errors={503: "REDIS_UNAVAILABLE"})
def admin_workers():
    require_admin()
    return ok(_service().workers())


@bp.post("/api/admin/workers/<name>/drain")
@doc("Drain a render worker, named by its node (name@host) or by its name when no other worker has it: "
     "on its next heartbeat it stops taking jobs, finishes those in flight and stays alive until resumed",
     auth="admin", errors={404: "WORKER_NOT_FOUND", 409: "WORKER_AMBIGUOUS", 503: "REDIS_UNAVAILABLE"})
def admin_drain_worker(name: str):
    require_admin()
    return ok(_service().drain_worker(name, True))


@bp.post("/api/admin/workers/<name>/resume")
@doc("Resume a drained render worker, named as for a drain: it takes jobs again on its next heartbeat",
     auth="admin", errors={404: "WORKER_NOT_FOUND", 409: "WORKER_AMBIGUOUS", 503: "REDIS_UNAVAILABLE"})
def admin_resume_worker(name: str):
    require_admin()
    return ok(_service().drain_worker(name, False))


@bp.get("/internal/outputs/<output_id>")
@doc("A render output's record (for the gallery)", errors={403: "SERVICE_TOKEN_REQUIRED", 404: "OUTPUT_NOT_FOUND"})
def internal_output(output_id: str):
    _require_service_token()
    return ok(_service().output_record(output_id))


@bp.get("/internal/jobs")
@doc("Summaries of up to 100 jobs (for the credits statement)", query=JobIdsQuery,
     errors={403: "SERVICE_TOKEN_REQUIRED"})
def internal_jobs():
    _require_service_token()
    return ok(_service().job_summaries(load_query(JobIdsQuery())["ids"]))


@bp.post("/internal/jobs")
@doc("Admit a job on behalf of a service account, with its limits (for the queue API)",
     body=InternalAdmissionSchema, status=202,
     errors={402: "INSUFFICIENT_CREDITS", 403: "SERVICE_TOKEN_REQUIRED, WORKFLOW_NOT_ALLOWED", 409: "PRICE_CHANGED",
             422: "UNKNOWN_WORKFLOW, MODEL_UNAVAILABLE, IMAGE_TOO_LARGE, CONTENT_REJECTED", 429: "QUEUE_LIMIT",
             503: "RENDER_UNAVAILABLE, ADMISSION_BUSY"},
     description="The same admission as POST /api/generate (validation, prices, expectedCost, the credits "
                 "hold, the queue); 200 with the existing job when the idempotency key was used already.")
def internal_admit():
    _require_service_token()
    data = load_json(InternalAdmissionSchema())
    limits = AccountLimits(data["max_active_jobs"],
                           frozenset(data["workflows"]) if data["workflows"] is not None else None, data["lane"])
    job, status = _service().admit(data["user_id"], data["params"], data["idempotency_key"], None, limits)
    return ok(job, status)


@bp.get("/internal/jobs/<job_id>")
@doc("A job's state (for credits' hold sweeper)", errors={403: "SERVICE_TOKEN_REQUIRED", 404: "JOB_NOT_FOUND"})
def internal_job(job_id: str):
    _require_service_token()
    return ok(_service().internal_job(job_id))


@bp.get("/internal/jobs/<job_id>/outputs")
@doc("A job's outputs (for the gallery)", errors={403: "SERVICE_TOKEN_REQUIRED", 404: "JOB_NOT_FOUND"})
def internal_job_outputs(job_id: str):
    _require_service_token()
    return ok(_service().job_outputs(job_id))
