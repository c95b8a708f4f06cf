"""What the render API reads and writes: the job-list query, the registry's and presets'
input, and jobs, outputs and uploads as JSON (for users), plus the internal output record
(for the gallery) and job summaries (for credits)."""
from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from services.render.jobs import JobFilter
from services.render.models import JOB_STATUSES, RenderJob, RenderOutput, RenderUpload
from services.render.scheduler import BATCH, LANES
from shared.db import isoformat
from shared.storage import Storage
from shared.web import CommaSeparated

JOB_ID = validate.Regexp(r"^[A-Za-z0-9_-]{1,64}$", error="Not a job id.")
SOURCE_REF = validate.Regexp(r"^(upload|output|work):[A-Za-z0-9_-]{1,64}$",
                             error='Must be "upload:<id>", "output:<id>" or "work:<id>".')
PRESET_KEY = validate.Regexp(r"^[a-z0-9][a-z0-9_-]{0,31}$", error="1 to 32 lower-case letters, digits, - or _.")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_PRESETS = 30


def _single_line(value: str) -> None:
    if _CONTROL.search(value):
        raise ValidationError("Control characters are not allowed.")


class Trimmed(fields.String):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return super()._deserialize(value, attr, data, **kwargs).strip()


class InternalAdmissionSchema(Schema):
    """``POST /internal/jobs``: ``params`` is the body of ``POST /api/generate``."""

    user_id = fields.Integer(data_key="userId", required=True, strict=True, validate=validate.Range(min=1, max=2**63 - 1))
    params = fields.Dict(required=True)
    idempotency_key = fields.String(data_key="idempotencyKey", required=True, validate=validate.Length(min=1, max=128))
    max_active_jobs = fields.Integer(data_key="maxActiveJobs", required=True, strict=True,
                                     validate=validate.Range(min=1, max=10_000))
    workflows = fields.List(fields.String(validate=validate.Length(min=1, max=64)), load_default=None,
                            allow_none=True)
    lane = fields.String(load_default=BATCH, validate=validate.OneOf(LANES))


class JobListQuery(Schema):
    status = fields.String(validate=validate.OneOf(JOB_STATUSES))
    workflow = fields.String(validate=validate.Length(min=1, max=64))
    model = fields.String(validate=validate.Length(min=1, max=255))
    search = Trimmed(load_default="", validate=validate.Length(max=100))
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100000))
    page_size = fields.Integer(data_key="pageSize", load_default=20, validate=validate.Range(min=1, max=100))


def job_filter(query: dict[str, Any]) -> JobFilter:
    return JobFilter(query.get("status"), query.get("workflow"), query.get("model"), query["search"])


class JobIdsQuery(Schema):
    ids = CommaSeparated(fields.String(validate=JOB_ID), max_items=100, required=True)


def localised_text(max_length: int) -> type[Schema]:
    """A schema of a text in Chinese and English (either may be empty)."""
    return Schema.from_dict({language: Trimmed(load_default="", validate=[validate.Length(max=max_length), _single_line])
                             for language in ("zh", "en")}, name=f"LocalisedText{max_length}")


NAMES, DESCRIPTIONS, LABELS = localised_text(60), localised_text(300), localised_text(20)


class RecommendedSchema(Schema):
    """Settings that suit a model; the create page applies the ones its workflow declares."""

    steps = fields.Integer(strict=True, validate=validate.Range(min=1, max=150))
    cfg_scale = fields.Float(data_key="cfgScale", validate=validate.Range(min=0, max=30))
    sampler = fields.String(validate=[validate.Length(min=1, max=64), _single_line])
    scheduler = fields.String(validate=[validate.Length(min=1, max=64), _single_line])
    width = fields.Integer(strict=True, validate=validate.Range(min=64, max=4096))
    height = fields.Integer(strict=True, validate=validate.Range(min=64, max=4096))
    guidance = fields.Float(validate=validate.Range(min=0, max=30))
    denoise = fields.Float(validate=validate.Range(min=0, max=1))
    negative_prompt = fields.String(data_key="negativePrompt", validate=validate.Length(max=2000))

    @validates_schema
    def _sizes(self, data: dict[str, Any], **_kwargs: Any) -> None:
        for name in ("width", "height"):
            if name in data and data[name] % 8:
                raise ValidationError("Must be a multiple of 8.", name)

    @post_load
    def _parameter_names(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        """Stored under the parameter names the workflows declare (``cfgScale``, not ``cfg_scale``)."""
        return {self.fields[name].data_key or name: value for name, value in data.items()}


class ModelEntrySchema(Schema):
    display_names = fields.Nested(NAMES, data_key="displayNames")
    description = fields.Nested(DESCRIPTIONS)
    recommended = fields.Nested(RecommendedSchema)
    preview = fields.String(allow_none=True, validate=SOURCE_REF)

    @validates_schema
    def _not_empty(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if not data:
            raise ValidationError("Give at least one of displayNames, description, recommended, preview.")


class ShareSchema(Schema):
    """An administrator's fair-share weight for one user; null restores the role's."""

    weight = fields.Float(required=True, allow_none=True, allow_nan=False,
                          validate=validate.Range(min=0.01, max=1000))


class PresetSchema(Schema):
    key = fields.String(required=True, validate=PRESET_KEY)
    labels = fields.Nested(LABELS, required=True)
    text = Trimmed(required=True, validate=[validate.Length(min=1, max=500), _single_line])

    @validates_schema
    def _labelled(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if not data["labels"]["zh"] or not data["labels"]["en"]:
            raise ValidationError("Give the label in Chinese and English.", "labels")


def _preset_list(data_key: str) -> fields.List:
    return fields.List(fields.Nested(PresetSchema), data_key=data_key, validate=validate.Length(max=MAX_PRESETS))


class PresetsSchema(Schema):
    """Loads to ``{kind: [preset, ...]}`` for the kinds given (``style``, ``negative``)."""

    style = _preset_list("stylePresets")
    negative = _preset_list("negativePresets")

    @validates_schema
    def _checked(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if not data:
            raise ValidationError("Give stylePresets, negativePresets or both.")
        for kind, presets in data.items():
            keys = [preset["key"] for preset in presets]
            if len(set(keys)) != len(keys):
                raise ValidationError("Each key may appear once.", self.fields[kind].data_key)


def job_json(job: RenderJob, outputs: list[RenderOutput], storage: Storage, retention: timedelta) -> dict[str, Any]:
    """A job as its owner sees it. Outputs not saved as works are removed ``retention`` after
    they were made: each carries its ``expiresAt``, the job the earliest of them."""
    error = None
    if job.error_code:
        error = {"code": job.error_code, "class": job.error_class, "message": job.error_message}
    return {
        "id": job.id,
        "workflow": job.workflow,
        "workflowVersion": job.workflow_version,
        "params": job.params,
        "status": job.status,
        "progress": job.progress,
        "pricePerImage": job.price_per_image,
        "imagesRequested": job.images_requested,
        "imagesDelivered": job.images_delivered,
        "cost": job.images_delivered * job.price_per_image,
        "cancelRequested": job.cancel_requested,
        "worker": job.worker,
        "comfyPromptId": job.comfy_prompt_id,
        "attempts": job.attempts,
        "error": error,
        "outputs": [output_json(output, storage, retention) for output in outputs],
        "expiresAt": isoformat(min(output.created_at for output in outputs) + retention) if outputs else None,
        "createdAt": isoformat(job.created_at),
        "startedAt": isoformat(job.started_at),
        "finishedAt": isoformat(job.finished_at),
        "settledAt": isoformat(job.settled_at),
    }


def output_json(output: RenderOutput, storage: Storage, retention: timedelta) -> dict[str, Any]:
    """An unsaved output is private: its URLs are signed for the owner and expire."""
    return {"id": output.id, "index": output.index, "imageUrl": storage.signed_url(output.image_key),
            "thumbnailUrl": storage.signed_url(output.thumbnail_key), "width": output.width,
            "height": output.height, "expiresAt": isoformat(output.created_at + retention)}


def job_summary(job: RenderJob, outputs: list[RenderOutput], storage: Storage) -> dict[str, Any]:
    """What the credits statement shows of a job (``GET /internal/jobs?ids=``)."""
    first = outputs[0] if outputs else None
    return {"id": job.id, "userId": job.user_id, "status": job.status, "workflow": job.workflow,
            "prompt": job.params.get("prompt"), "imagesDelivered": job.images_delivered,
            "thumbnailUrl": storage.signed_url(first.thumbnail_key) if first else None,
            "width": first.width if first else job.params.get("width"),
            "height": first.height if first else job.params.get("height")}


CONTRACT_PARAMS = ("prompt", "negativePrompt", "model", "width", "height", "batchSize", "steps", "cfgScale",
                   "seed", "sampler", "scheduler")


def output_record(output: RenderOutput, job: RenderJob) -> dict[str, Any]:
    """The internal contract of ``GET /internal/outputs/<id>`` (read by the gallery).

    ``params`` always has the contract's names (None where the workflow has no such
    parameter) plus the workflow's own; ``graph`` is the exact graph sent to ComfyUI.
    """
    params = {name: job.params.get(name) for name in CONTRACT_PARAMS}
    params.update({k: v for k, v in job.params.items() if k not in params})
    source_work = job.source_ref.split(":", 1)[1] if job.source_ref and job.source_ref.startswith("work:") else None
    source_work_id = int(source_work) if source_work and source_work.isascii() and source_work.isdigit() else None
    return {"id": output.id, "jobId": output.job_id, "userId": output.user_id, "index": output.index,
            "imageKey": output.image_key, "thumbnailKey": output.thumbnail_key, "width": output.width,
            "height": output.height, "fileSize": output.file_size, "sha256": output.sha256,
            "workflow": job.workflow, "workflowVersion": job.workflow_version, "params": params,
            "graph": job.graph, "sourceWorkId": source_work_id,
            "createdAt": isoformat(output.created_at)}


def upload_json(upload: RenderUpload, storage: Storage) -> dict:
    return {"id": upload.id, "ref": f"upload:{upload.id}", "url": storage.signed_url(upload.image_key),
            "format": upload.format, "width": upload.width, "height": upload.height,
            "fileSize": upload.file_size, "createdAt": isoformat(upload.created_at)}
