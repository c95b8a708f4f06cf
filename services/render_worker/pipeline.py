"""``render_job``: run one admitted job from claim to a final state.

Order per image: store files → insert the output row (commit) → capture its price
(key ``capture:<job>:<index>``) → publish ``job.image``. At the end the rest of the hold
is released (key ``release:<job>``). Every step is idempotent, so a redelivered message
repeats nothing that already happened, and a finished job is skipped.
"""
from __future__ import annotations

import hashlib
import io
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from services.credits.client import CreditsClient
from shared.config import Settings
from shared.db import Database
from shared.events import EventBus, redis_client
from shared.storage import LocalStorage, content_key

from . import jobs
from .comfyui import ComfyUIClient, ComfyUIError, FetchedImage, PromptInterrupted
from .models import RenderJob
from .workflows import Template, build_graph, load_templates

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 512
PROGRESS_INTERVAL_SECONDS = 0.1
CANCEL_POLL_SECONDS = 0.5


@dataclass
class RenderContext:
    """What a worker process needs to run jobs; built once per process."""

    settings: Settings
    db: Database
    comfyui: ComfyUIClient
    credits: CreditsClient
    events: EventBus
    storage: LocalStorage
    worker_id: str
    templates: dict[str, Template] = field(default_factory=load_templates)


def build_context(settings: Settings, worker_id: str) -> RenderContext:
    return RenderContext(settings=settings, db=Database(settings.render_database_url),
                         comfyui=ComfyUIClient(settings.comfyui_url),
                         credits=CreditsClient(settings.credits_url, settings.service_token),
                         events=EventBus(redis_client(settings.redis_url)),
                         storage=LocalStorage(settings.media_dir), worker_id=worker_id)


def render_job(job_id: str, ctx: RenderContext) -> None:
    with ctx.db.transaction() as session:
        job = jobs.claim_job(session, job_id, ctx.worker_id)
    if job is None:
        log.info("job %s is finished, cancelled or unknown; skipping", job_id)
        return
    _publish(ctx, job, "job.started", {})
    try:
        if job.cancel_requested:
            raise PromptInterrupted(job_id)
        images = _execute(ctx, job)
        delivered = _deliver(ctx, job, images)
        if delivered == 0:
            raise ComfyUIError("The workflow finished without producing an image.", code="NO_OUTPUT")
    except PromptInterrupted:
        _finish(ctx, job, "cancelled")
    except ComfyUIError as exc:
        log.warning("job %s failed: %s %s", job_id, exc.code, exc.message)
        _finish(ctx, job, "failed", code=exc.code, error_class=exc.error_class, message=exc.message)
    except Exception:
        log.exception("job %s failed unexpectedly", job_id)
        _finish(ctx, job, "failed", code="INTERNAL_ERROR", error_class="system",
                message="The render failed on our side.")
        raise
    else:
        _finish(ctx, job, "succeeded", delivered=delivered)


def _execute(ctx: RenderContext, job: RenderJob) -> list[FetchedImage]:
    template = ctx.templates[job.workflow]
    graph = build_graph(template, job.params)
    prompt_id = jobs.new_job_id()
    with ctx.db.transaction() as session:
        jobs.record_prompt(session, job.id, prompt_id)
    progress = _ProgressReporter(ctx, job)
    return ctx.comfyui.run(graph, template.outputs, prompt_id=prompt_id,
                           deadline=time.monotonic() + ctx.settings.job_deadline_seconds,
                           on_progress=progress.report, should_cancel=progress.cancel_requested)


def _deliver(ctx: RenderContext, job: RenderJob, images: list[FetchedImage]) -> int:
    """Store, record, charge and announce each image; returns how many were delivered."""
    delivered = 0
    for index, image in enumerate(images[:job.images_requested]):
        file = _store(ctx.storage, index, image.data)
        with ctx.db.transaction() as session:
            output = jobs.add_output(session, job, file)
        ctx.credits.capture(job.id, job.price_per_image, f"capture:{job.id}:{index}")
        delivered += 1
        _publish(ctx, job, "job.image", {"outputId": output.id, "index": index,
                                         "imageUrl": ctx.storage.url(output.image_key),
                                         "thumbnailUrl": ctx.storage.url(output.thumbnail_key),
                                         "width": output.width, "height": output.height})
    return delivered


def _store(storage: LocalStorage, index: int, png: bytes) -> jobs.OutputFile:
    """Keep the original PNG and a WebP thumbnail that fits in 512×512."""
    with Image.open(io.BytesIO(png)) as original:
        width, height = original.size
        thumbnail = original.convert("RGBA" if original.mode in ("RGBA", "LA", "P") else "RGB")
    thumbnail.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    buffer = io.BytesIO()
    thumbnail.save(buffer, format="WEBP", quality=80)
    image_key = storage.put(content_key(png, "png", "images"), png)
    thumb_bytes = buffer.getvalue()
    thumbnail_key = storage.put(content_key(thumb_bytes, "webp", "thumbs"), thumb_bytes)
    return jobs.OutputFile(index=index, image_key=image_key, thumbnail_key=thumbnail_key, width=width,
                           height=height, file_size=len(png), sha256=hashlib.sha256(png).hexdigest())


def _finish(ctx: RenderContext, job: RenderJob, status: str, *, delivered: int = 0, code: str | None = None,
            error_class: str | None = None, message: str | None = None) -> None:
    """Record the final state, return the unspent hold, then announce it."""
    with ctx.db.transaction() as session:
        changed = jobs.finish_job(session, job.id, status, error_code=code, error_class=error_class,
                                  error_message=message)
    if not changed:
        log.info("job %s was already finished; not finishing it again", job.id)
        return
    released = ctx.credits.release(job.id, f"release:{job.id}").get("released", 0)
    if status == "succeeded":
        _publish(ctx, job, "job.succeeded", {"images": delivered, "charged": delivered * job.price_per_image})
    elif status == "failed":
        _publish(ctx, job, "job.failed", {"errorCode": code, "errorClass": error_class, "message": message,
                                          "refunded": released})
    else:
        _publish(ctx, job, "job.cancelled", {"refunded": released})


def _publish(ctx: RenderContext, job: RenderJob, event_type: str, data: dict[str, Any]) -> None:
    ctx.events.publish(job.user_id, event_type, {"jobId": job.id, **data}, job_id=job.id)


class _ProgressReporter:
    """Publishes sampler progress at most every 100 ms (always the last step), stores it on
    the row, and answers the client's "should I cancel?" from the row."""

    def __init__(self, ctx: RenderContext, job: RenderJob) -> None:
        self.ctx = ctx
        self.job = job
        self.last_published = 0.0
        self.last_polled = 0.0
        self.cancelled = False

    def report(self, step: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last_published < PROGRESS_INTERVAL_SECONDS and step < total:
            return
        self.last_published = now
        percent = int(step * 100 / total) if total else 0
        with self.ctx.db.transaction() as session:
            self.cancelled = jobs.record_progress(session, self.job.id, percent)
        self.last_polled = now
        _publish(self.ctx, self.job, "job.progress", {"step": step, "totalSteps": total, "percent": percent})

    def cancel_requested(self) -> bool:
        now = time.monotonic()
        if not self.cancelled and now - self.last_polled >= CANCEL_POLL_SECONDS:
            self.last_polled = now
            with self.ctx.db.transaction() as session:
                self.cancelled = jobs.cancel_requested(session, self.job.id)
        return self.cancelled
