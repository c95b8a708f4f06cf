"""What the render API reads and writes: the job-list query, and jobs, outputs and
uploads as JSON (for users), plus the internal output record (for the gallery)."""
from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from services.render.models import JOB_STATUSES, RenderJob, RenderOutput, RenderUpload
from shared.db import isoformat
from shared.storage import Storage


class JobListQuery(Schema):
    status = fields.String(validate=validate.OneOf(JOB_STATUSES))
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100000))
    page_size = fields.Integer(data_key="pageSize", load_default=20, validate=validate.Range(min=1, max=100))


def job_json(job: RenderJob, outputs: list[RenderOutput], storage: Storage) -> dict[str, Any]:
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
        "outputs": [output_json(output, storage) for output in outputs],
        "createdAt": isoformat(job.created_at),
        "startedAt": isoformat(job.started_at),
        "finishedAt": isoformat(job.finished_at),
        "settledAt": isoformat(job.settled_at),
    }


def output_json(output: RenderOutput, storage: Storage) -> dict[str, Any]:
    """An unsaved output is private: its URLs are signed for the owner and expire."""
    return {"id": output.id, "index": output.index, "imageUrl": storage.signed_url(output.image_key),
            "thumbnailUrl": storage.signed_url(output.thumbnail_key), "width": output.width,
            "height": output.height}


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
    return {"id": output.id, "jobId": output.job_id, "userId": output.user_id, "index": output.index,
            "imageKey": output.image_key, "thumbnailKey": output.thumbnail_key, "width": output.width,
            "height": output.height, "fileSize": output.file_size, "sha256": output.sha256,
            "workflow": job.workflow, "workflowVersion": job.workflow_version, "params": params,
            "graph": job.graph, "sourceWorkId": int(source_work) if source_work and source_work.isdigit() else None,
            "createdAt": isoformat(output.created_at)}


def upload_json(upload: RenderUpload, storage: Storage) -> dict:
    return {"id": upload.id, "ref": f"upload:{upload.id}", "url": storage.signed_url(upload.image_key),
            "format": upload.format, "width": upload.width, "height": upload.height,
            "fileSize": upload.file_size, "createdAt": isoformat(upload.created_at)}
