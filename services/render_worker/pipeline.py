"""``render_job``: run one admitted job from claim to a final state.

Claim (only a queued, uncancelled job, or a running one whose worker died) → pick the
workflow variant this ComfyUI runs → upload the source image under a per-job name →
build the graph → run it in ComfyUI (resubmitted once if a ComfyUI restart lost it, or without
ComfyUI's thumbnails if one of their nodes failed) →
per image: fetch, check (``CONTENT_IMAGE_CHECKER``), label and store original and thumbnail,
insert the output row (commit), publish ``job.image`` → record the final state (a job's last
image commits with its success), then settle the hold (one credits call charges the delivered
images) and announce the outcome (``services.render.outbox``).
Every step is idempotent, so a redelivered message repeats nothing that already
happened, and a finished job is skipped. The job succeeds only when every requested
image was delivered. A credits or Redis outage never fails a job: what credits did not
take and an event Redis did not take are left in the job's outbox for the reconciler.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import logging
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import redis
from PIL import Image

from services.credits.client import CreditsClient
from services.gallery.client import GalleryClient
from services.safety.client import record as record_audit
from shared.config import ConfigError, Settings
from shared.db import Database
from shared.errors import ServiceError
from shared.events import EventBus, announce, redis_client
from shared.labels import (ImageLabel, LabelConfig, encode_derived, label_png, label_webp, load_label_config,
                           whole_png_size, webp_size)
from shared.storage import QUARANTINE_PREFIX, Storage, StorageError, content_key, digest_key, make_storage
from shared.web import job_context

from services.render import cancel_signal, jobs
from services.render import metrics as render_metrics
from services.render.catalog import worker_alive
from services.render_worker.drain import WorkerState
from services.render_worker.checkers import CheckerUnavailable, ImageChecker, load_checker
from services.render_worker.heartbeat import choices_from_object_info, usable_node_classes
from services.render_worker.comfyui import (ComfyUIClient, ComfyUIError, ExecutionFailed, ImageRef, PromptInterrupted,
                                            RunHooks, image_refs, outcome_from_history)
from services.render.config import RenderConfig
from services.render.models import RenderJob
from services.render.outbox import JobOutbox
from services.render.scheduler import FairQueue, entry_for
from services.render.workflows import (THUMBNAIL_NODE_CLASSES, THUMBNAIL_SIZE, Template, TemplateStore, Variant,
                                       build_graph, with_thumbnails)

log = logging.getLogger(__name__)

# Live progress at most twice a second, and always the sampler's last step (a 2-s job: 4–5 events,
# not 20; the web client's bar glides between them); the row's progress, for those who poll,
# every 2 s. Each event costs the platform about 0.6 ms of CPU (the worker's publish, Redis, the
# gateway's relay to every socket of the owner).
PROGRESS_INTERVAL_SECONDS = 0.5
PROGRESS_STORE_SECONDS = 2.0
# The row's cancel flag, the truth, is read at least this often (a signal Redis did not take; the
# signal is read twice a second, ``cancel_signal.Watch``), with a heartbeat on the row.
CANCEL_ROW_SECONDS = 5.0
# A job that this worker's ComfyUI cannot serve (a model it lacks) is passed on this often.
MAX_HOPS = 8
# After ComfyUI failed running a thumbnail chain's node, the worker makes the thumbnails itself this
# long (``_pause_thumbnails``).
THUMBNAIL_PAUSE_SECONDS = 600.0


@dataclass
class RenderContext:
    """What a worker process needs to run jobs; built once per process."""

    settings: Settings
    config: RenderConfig
    db: Database
    comfyui: ComfyUIClient
    credits: CreditsClient
    gallery: GalleryClient
    events: EventBus
    storage: Storage
    worker_id: str
    templates: TemplateStore
    outbox: JobOutbox
    labels: LabelConfig
    checker: ImageChecker
    fair: FairQueue
    cancels: cancel_signal.Watch
    state: WorkerState | None = None  # a worker's (not the reconciler's): drain, counters, loaded model
    capabilities_cache: tuple[float, set[str], dict[str, list[str]]] | None = None
    thumbnails_paused_until: float = 0.0  # time.monotonic(): no thumbnail chain sent before (``_pause_thumbnails``)

    def capabilities(self) -> tuple[set[str], dict[str, list[str]]]:
        """Node classes and catalog kinds of this worker's ComfyUI (re-read every 30 s)."""
        known = self.known_capabilities()
        if known is None:
            info = self.comfyui.object_info_all()
            self.capabilities_cache = (time.monotonic(), usable_node_classes(info), choices_from_object_info(info))
            known = self.capabilities_cache[1], self.capabilities_cache[2]
        return known

    def known_capabilities(self) -> tuple[set[str], dict[str, list[str]]] | None:
        """``capabilities()`` when read within 30 s, else None (without asking ComfyUI)."""
        cached = self.capabilities_cache
        if cached is None or time.monotonic() - cached[0] > 30:
            return None
        return cached[1], cached[2]

    def alive(self, worker_id: str) -> bool:
        return worker_alive(self.events.redis, worker_id)


def build_context(settings: Settings, config: RenderConfig, worker_id: str,
                  templates: TemplateStore | None = None, credits_retry_seconds: float | None = None) -> RenderContext:
    """``credits_retry_seconds`` (default ``RENDER_CREDITS_RETRY_SECONDS``) bounds how long one
    settlement waits for credits before leaving the job to the reconciler."""
    db = Database(settings.render_database_url)
    credits = CreditsClient(settings.credits_url, settings.service_token)
    gallery = GalleryClient(settings.gallery_url, settings.service_token, timeout=(2.0, 5.0))
    events = EventBus(redis_client(settings.redis_url))
    retry = config.credits_retry_seconds if credits_retry_seconds is None else credits_retry_seconds
    try:
        checker = load_checker(config.image_checker, config.image_checker_timeout, config.image_checker_token)
    except (ValueError, ImportError) as exc:
        raise ConfigError(f"CONTENT_IMAGE_CHECKER: {exc}") from exc
    return RenderContext(settings=settings, config=config, db=db,
                         comfyui=ComfyUIClient(config.comfyui_url, retry_seconds=config.comfyui_retry_seconds),
                         credits=credits, gallery=gallery, events=events, storage=make_storage(settings),
                         worker_id=worker_id, templates=templates or TemplateStore(defaults=config.parameter_defaults),
                         outbox=JobOutbox(db, credits, events, gallery, retry),
                         labels=load_label_config(settings), checker=checker,
                         fair=FairQueue(events.redis, config.queue_prefix), cancels=cancel_signal.Watch(events.redis))


class JobFailed(Exception):
    def __init__(self, message: str, code: str, error_class: str = "system") -> None:
        super().__init__(message)
        self.message, self.code, self.error_class = message, code, error_class


class PassOn(Exception):
    """This worker cannot serve the job; another worker of the pool may."""


@dataclass
class Delivery:
    """What one attempt delivered so far: images recorded, and images the output check withheld;
    ``finished``: the job as its last image's transaction recorded its success (what ``_finish``
    would read)."""

    delivered: int = 0
    flagged: int = 0
    finished: jobs.FinishedJob | None = None


def render_job(job_id: str, ctx: RenderContext, hops: int = 0) -> None:
    with job_context(job_id), ctx.cancels.watching(job_id):  # every log line of the job carries its id
        if ctx.state is None:
            return _render_job(job_id, ctx, hops)
        if ctx.state.state == "draining":
            return _decline(ctx, job_id, hops)
        ctx.state.job_started()
        try:
            _render_job(job_id, ctx, hops)
        finally:
            ctx.state.job_ended()


def _decline(ctx: RenderContext, job_id: str, hops: int) -> None:
    """A message that reached a draining worker (Celery's consumer reads once more after a
    shutdown begins, and a drain is obeyed at the next beat): put the job back in line,
    unclaimed, for the scheduler to give to another worker."""
    with ctx.db.read() as session:
        job = jobs.get_job(session, job_id)
    if job is None or job.status != "queued":
        return
    log.info("job %s declined (this worker is draining); back in line", job_id)
    _back_in_line(ctx, job, hops=hops)


def _back_in_line(ctx: RenderContext, job: RenderJob | jobs.ClaimedJob, hops: int = 0) -> None:
    """Put a queued job at the front of its line, away from this worker."""
    try:
        ctx.fair.enqueue(entry_for(job, ctx.templates.get(job.workflow), hops=hops, avoid=[ctx.worker_id]),
                         front=True)
    except redis.RedisError:
        pass  # the job is queued in the database: the scheduler finds it on its next sync


def _render_job(job_id: str, ctx: RenderContext, hops: int) -> None:
    prompt, problem = None, None
    with ctx.db.transaction() as session:
        job = jobs.claim_job(session, job_id, ctx.worker_id, ctx.alive)
        if job is not None:
            try:
                prompt = _prompt_at_claim(ctx, session, job)
            except Exception as exc:  # failing the job needs its claim committed: raised below
                problem = exc
    if job is None:
        log.info("job %s is finished, cancelled, held by a live worker or unknown; skipping", job_id)
        return
    render_metrics.job_picked(job)
    _publish(ctx, job, "job.started", {"attempt": job.attempts, "worker": ctx.worker_id})
    template = ctx.templates.get(job.workflow)
    delivery = Delivery()
    try:
        if problem is not None:
            raise problem
        if job.attempts > ctx.config.max_attempts:
            raise JobFailed(f"The job was interrupted {job.attempts - 1} times (its worker kept dying).",
                            "TOO_MANY_ATTEMPTS")
        if template is None:
            raise JobFailed(f"The workflow {job.workflow!r} is no longer available.", "WORKFLOW_UNAVAILABLE")
        _run(ctx, job, template, hops, delivery, prompt)
    except PassOn:
        return
    except PromptInterrupted:
        if not (ctx.state and ctx.state.hand_back.is_set() and _hand_back(ctx, job)):
            _finish(ctx, job, "cancelled")
    except (ComfyUIError, JobFailed) as exc:
        log.warning("job %s failed: %s %s", job_id, exc.code, exc.message)
        _finish(ctx, job, "failed", code=exc.code, error_class=exc.error_class,
                message=exc.message)
    except ServiceError as exc:
        log.warning("job %s failed: a platform service answered %s %s", job_id, exc.code, exc.message)
        _finish(ctx, job, "failed", code=exc.code or "SERVICE_UNAVAILABLE",
                error_class="system", message="A platform service failed during the render; try again.")
    except Exception:
        log.exception("job %s failed unexpectedly", job_id)
        _finish(ctx, job, "failed", code="INTERNAL_ERROR", error_class="system",
                message="The render failed on our side.")
    else:
        if delivery.finished is not None:
            _complete(ctx, job, "succeeded", None, delivery.finished)
        elif delivery.flagged:
            _finish(ctx, job, "failed", code="OUTPUT_FLAGGED", error_class="user",
                    message=f"{delivery.flagged} of {job.images_requested} images were withheld by the content "
                            "check and not charged.")
        elif delivery.delivered < job.images_requested:
            code = "NO_OUTPUT" if delivery.delivered == 0 else "PARTIAL_OUTPUT"
            _finish(ctx, job, "failed", code=code, error_class="system",
                    message=f"ComfyUI produced {delivery.delivered} of {job.images_requested} images; "
                            "the missing ones were not charged.")
        else:
            _finish(ctx, job, "succeeded")
    finally:
        _wake_scheduler(ctx)


@dataclass(frozen=True)
class Prompt:
    """A prompt recorded on the job's row (its id before ComfyUI sees it, so that the next
    attempt after a crash finds it), not submitted yet."""

    id: str
    variant: Variant
    params: dict[str, Any]
    graph: dict[str, Any]  # the workflow's, recorded on the job
    submitted: dict[str, Any]  # what ComfyUI runs: the graph and its thumbnails' nodes (``with_thumbnails``)
    thumbnails: list[str]  # the nodes saving each image's thumbnail

    @property
    def chain(self) -> set[str]:
        """The thumbnail chains' nodes: what ``submitted`` adds to ``graph``."""
        return set(self.submitted) - set(self.graph)


def _new_prompt(ctx: RenderContext, variant: Variant, params: dict[str, Any], graph: dict[str, Any], images: int,
                node_classes: set[str]) -> Prompt:
    """A prompt of ``graph`` under a new id, with ComfyUI's thumbnail chains unless they failed
    there lately (``_pause_thumbnails``)."""
    if time.monotonic() < ctx.thumbnails_paused_until:
        node_classes = node_classes - THUMBNAIL_NODE_CLASSES
    return Prompt(str(uuid.uuid4()), variant, params, graph,
                  *with_thumbnails(graph, variant.outputs, images, node_classes, params))


def _prompt_at_claim(ctx: RenderContext, session, job: jobs.ClaimedJob) -> Prompt | None:
    """The usual job's prompt, recorded in the claim's own transaction (one commit before ComfyUI
    sees it instead of two). None, leaving it to ``_run``, for a job that needs more than this
    worker knows already: a retry (the previous attempt's prompt may be adopted), a source image
    to upload, a model or workflow this ComfyUI lacks, capabilities to read from ComfyUI."""
    template = ctx.templates.get(job.workflow)
    known = ctx.known_capabilities()
    if (template is None or known is None or job.attempts > 1 or job.comfy_prompt_id
            or any(name in job.params for name in template.image_parameters)):
        return None
    node_classes, choices = known
    variant = template.variant_for(node_classes, choices)
    if variant is None or _missing_models(template, job.params, choices):
        return None
    params = _complete_params(template, variant, job.params, choices)
    prompt = _new_prompt(ctx, variant, params, build_graph(template, variant, params), job.images_requested,
                         node_classes)
    jobs.record_prompt(session, job.id, prompt.id, variant.name, prompt.graph)
    return prompt


def _run(ctx: RenderContext, job: jobs.ClaimedJob, template: Template, hops: int, delivery: Delivery,
         prompt: Prompt | None = None) -> None:
    if prompt is None:
        node_classes, choices = ctx.capabilities()
        variant = template.variant_for(node_classes, choices)
        missing = _missing_models(template, job.params, choices)
        if variant is None or missing:
            _pass_on(ctx, job, hops, missing or [f"workflow {template.name}"])
        params = _complete_params(template, variant, job.params, choices)
    else:
        variant, params = prompt.variant, prompt.params
    hooks = _Hooks(ctx, job)
    deadline = time.monotonic() + min(template.deadline_seconds, ctx.settings.job_deadline_seconds)
    thumbnails: list[str] = []  # an adopted prompt's thumbnails are made here
    refs = None if prompt is not None else _adopt_previous_prompt(ctx, job, variant)
    if refs is None:
        try:
            refs, thumbnails = _submit(ctx, job, template, variant, params, hooks, deadline, prompt)
        except ComfyUIError as exc:
            if exc.code != "PROMPT_LOST" or not ctx.config.resubmit_lost:
                raise
            # A ComfyUI restart forgot the prompt: the same graph (same seed) once more delivers
            # what the user paid for; the image keys and the hold are the job's, so nothing is
            # charged twice.
            log.warning("job %s: %s Submitting the prompt once more.", job.id, exc.message)
            refs, thumbnails = _submit(ctx, job, template, variant, params, hooks, deadline)
    if ctx.state is not None:
        ctx.state.loaded(next((params.get(p["name"]) for p in template.parameters
                               if p.get("from") in ("checkpoints", "diffusion_models") and params.get(p["name"])),
                              None))
    _deliver(ctx, job, refs, delivery, thumbnails)


def _submit(ctx: RenderContext, job: jobs.ClaimedJob, template: Template, variant: Variant, params: dict[str, Any],
            hooks: "_Hooks", deadline: float, prompt: Prompt | None = None) -> tuple[list[ImageRef], list[str]]:
    """Run ``prompt`` in ComfyUI; without one, upload the source, build the graph and record the
    prompt id first. The references of the images and of their thumbnails, and the thumbnails'
    nodes.

    When a node of a thumbnail chain fails at execution, the workflow's own graph runs once more
    under a new prompt id (recorded on the row, the same seed) and the worker makes the
    thumbnails: the images were fine, and the job's hold is settled once, at its end. ComfyUI's
    history of the failed prompt may hold SaveImage's files already, but only if ComfyUI happened
    to run SaveImage before the failing node (its execution order is not a promise), and the
    re-run is the one path that holds either way; ComfyUI's cache keeps the outputs of the nodes
    that ran, so it seldom samples again."""
    if hooks.should_cancel():
        raise PromptInterrupted(job.id)
    if prompt is None:
        overrides = {name: _upload_source(ctx, job) for name in template.image_parameters if name in params}
        prompt = _new_prompt(ctx, variant, params, build_graph(template, variant, params, overrides),
                             job.images_requested, ctx.capabilities()[0])
        with ctx.db.transaction() as session:
            jobs.record_prompt(session, job.id, prompt.id, variant.name, prompt.graph)
    try:
        return _execute(ctx, prompt, hooks, deadline), prompt.thumbnails
    except ExecutionFailed as exc:
        if exc.node_id not in prompt.chain:
            raise
        _pause_thumbnails(ctx, exc)
    if hooks.should_cancel():
        raise PromptInterrupted(job.id)
    prompt = dataclasses.replace(prompt, id=str(uuid.uuid4()), submitted=prompt.graph, thumbnails=[])
    with ctx.db.transaction() as session:
        jobs.record_prompt(session, job.id, prompt.id, variant.name, prompt.graph)
    log.info("job %s: ComfyUI's thumbnail failed; running the workflow's graph once more without it (prompt %s)",
             job.id, prompt.id)
    return _execute(ctx, prompt, hooks, deadline), []


def _execute(ctx: RenderContext, prompt: Prompt, hooks: "_Hooks", deadline: float) -> list[ImageRef]:
    return ctx.comfyui.run(prompt.submitted, prompt.variant.outputs + prompt.thumbnails, deadline=deadline,
                           prompt_id=prompt.id, hooks=RunHooks(on_progress=hooks.progress, on_preview=hooks.preview,
                                                               should_cancel=hooks.should_cancel))


def _pause_thumbnails(ctx: RenderContext, exc: ExecutionFailed) -> None:
    """Send no thumbnail chain to this ComfyUI for THUMBNAIL_PAUSE_SECONDS: a node of one failed
    as it ran (a Pillow without WebP, memory running out in the scale). A fixed cool-off, not the
    next capabilities read (every 30 s): ``/object_info`` lists those nodes all the same, so only a
    run tells. Trying again after the cool-off costs one re-run (per job then in flight) while a
    transient failure (memory) heals, and a lasting one (a codec) leaves the worker making the
    thumbnails, about 8 ms of its CPU each.
    Logged once per cool-off."""
    now = time.monotonic()
    if now >= ctx.thumbnails_paused_until:
        log.warning("ComfyUI at %s failed running the thumbnail node %s (%s): %s; the worker makes the thumbnails "
                    "for the next %.0f s", ctx.comfyui.base_url, exc.node_id, exc.node_type, exc.exception_message,
                    THUMBNAIL_PAUSE_SECONDS)
    ctx.thumbnails_paused_until = now + THUMBNAIL_PAUSE_SECONDS


def _missing_models(template: Template, params: dict[str, Any], choices: dict[str, list[str]]) -> list[str]:
    """Catalog values the job asks for that this ComfyUI does not have."""
    return [f"{p['name']}={params[p['name']]!r}" for p in template.parameters
            if "from" in p and p["name"] in params and params[p["name"]] not in choices.get(p["from"], [])]


def _complete_params(template: Template, variant: Variant, params: dict[str, Any],
                     choices: dict[str, list[str]]) -> dict[str, Any]:
    """Fill optional catalog parameters the variant binds from this worker's catalog."""
    completed = dict(params)
    for param in template.parameters:
        name = param["name"]
        if name not in completed and name in variant.binds and "from" in param:
            names = choices.get(param["from"], [])
            if names:
                completed[name] = names[0]
    return completed


def _pass_on(ctx: RenderContext, job: jobs.ClaimedJob, hops: int, missing: list[str]) -> None:
    """Hand the job back to the scheduler for another worker, or fail it after MAX_HOPS."""
    if hops >= MAX_HOPS:
        raise JobFailed(f"No render worker could serve this job (missing {', '.join(missing)}).",
                        "MODEL_UNAVAILABLE")
    with ctx.db.transaction() as session:
        requeued = jobs.requeue(session, job.id, ctx.worker_id)
    if not requeued:
        raise JobFailed("The job could not be handed to another worker.", "MODEL_UNAVAILABLE")
    log.info("job %s needs %s, which this worker lacks; passing it on", job.id, missing)
    _back_in_line(ctx, job, hops=hops + 1)
    raise PassOn()


def _hand_back(ctx: RenderContext, job: jobs.ClaimedJob) -> bool:
    """The worker is shutting down and the drain time is up: put the interrupted job back in
    line for another worker, its hold untouched and this attempt not counted. False when the
    job's owner cancelled it meanwhile (it then ends cancelled)."""
    with ctx.db.transaction() as session:
        if jobs.cancel_requested(session, job.id):
            return False
        requeued = jobs.requeue(session, job.id, ctx.worker_id, attempt_used=False)
    if not requeued:
        return False
    log.warning("job %s handed back (this worker is shutting down)", job.id)
    _back_in_line(ctx, job)
    return True


def _adopt_previous_prompt(ctx: RenderContext, job: jobs.ClaimedJob, variant: Variant) -> list[ImageRef] | None:
    """After a crash: reuse the dead worker's prompt if it finished in this ComfyUI, else stop it."""
    if not job.comfy_prompt_id or job.attempts <= 1:
        return None
    try:
        entry = ctx.comfyui.history(job.comfy_prompt_id)
        if entry is None:
            ctx.comfyui.cancel(job.comfy_prompt_id)
            return None
    except ComfyUIError:
        return None
    outcome, _ = outcome_from_history(entry)
    if outcome != "success":
        return None
    log.info("job %s: adopting the finished prompt %s of its previous attempt", job.id, job.comfy_prompt_id)
    return image_refs(entry.get("outputs") or {}, variant.outputs)


def _upload_source(ctx: RenderContext, job: jobs.ClaimedJob) -> str:
    """Copy the job's source image into ComfyUI's input folder under a per-job name."""
    if not job.source_key:
        raise JobFailed("The job has no source image.", "SOURCE_MISSING", "user")
    try:
        data = ctx.storage.read(job.source_key)
    except (OSError, StorageError) as exc:
        raise JobFailed("The source image is no longer stored.", "SOURCE_MISSING") from exc
    extension = job.source_key.rsplit(".", 1)[-1]
    return ctx.comfyui.upload_image(data, f"aigc-job-{job.id}-{job.attempts}.{extension}")


def _deliver(ctx: RenderContext, job: jobs.ClaimedJob, refs: list[ImageRef], delivery: Delivery,
             thumbnails: list[str]) -> None:
    """Fetch, store, record and announce each image, noting each step in ``delivery``. Nothing
    is charged here: the settlement at the end charges every delivered image in one call.
    ``thumbnails`` names the nodes that saved ComfyUI's thumbnail of each image, in order."""
    made = {ref.node_id: ref for ref in refs if ref.node_id in thumbnails}
    images = [ref for ref in refs if ref.node_id not in thumbnails]
    for index, ref in enumerate(images[:job.images_requested]):
        thumbnail_ref = made.get(thumbnails[index]) if index < len(thumbnails) else None
        thumbnail = ctx.comfyui.start_fetch(thumbnail_ref) if thumbnail_ref is not None else None
        data = ctx.comfyui.fetch_image(ref)
        if not _passes_check(ctx, job, index, data, delivery):
            continue
        file = _store(ctx.storage, index, data, _label(ctx, job, index), ctx.labels.secret,
                      _fetched_thumbnail(job, thumbnail_ref, thumbnail))
        completes = delivery.flagged == 0 and delivery.delivered + 1 == job.images_requested
        with ctx.db.transaction() as session:  # the last image and the job's success: one commit
            output = jobs.add_output(session, job, file, completes=completes)
            if output is not None and completes:
                delivery.finished = ctx.outbox.read_finished(session, job.id)
        if output is None:
            log.warning("job %s was finished while delivering image %s; keeping nothing more", job.id, index)
            return
        delivery.delivered += 1
        _publish(ctx, job, "job.image", {"outputId": output.id, "index": index,
                                         "imageUrl": ctx.storage.signed_url(output.image_key),
                                         "thumbnailUrl": ctx.storage.signed_url(output.thumbnail_key),
                                         "width": output.width, "height": output.height})


def _passes_check(ctx: RenderContext, job: jobs.ClaimedJob, index: int, data: bytes, delivery: Delivery) -> bool:
    """Whether the output check lets this image through. A flagged image is neither shown nor
    charged nor given an output row; it is kept under a private ``quarantine/`` key for
    moderators, logged, announced (``content.output_flagged`` on ``platform:events``) and recorded
    in the safety audit log with that key. A checker without an answer lets it through (fail open)
    or fails the job."""
    if ctx.checker.name == "none":
        return True
    context = {"jobId": job.id, "userId": job.user_id, "index": index, "workflow": job.workflow,
               "prompt": (job.params or {}).get("prompt")}
    try:
        verdict = ctx.checker.check(data, context)
    except CheckerUnavailable as exc:
        if ctx.config.image_checker_fail_closed:
            log.error("job %s image %s: the output check gave no answer (%s); failing closed", job.id, index, exc)
            raise JobFailed("The content check is unavailable, so the image was not delivered; nothing was "
                            "charged for it. Try again later.", "OUTPUT_CHECK_UNAVAILABLE") from exc
        log.warning("job %s image %s delivered unchecked: the output check gave no answer (%s); failing open",
                    job.id, index, exc)
        return True
    if not verdict.flagged:
        return True
    delivery.flagged += 1
    digest = hashlib.sha256(data).hexdigest()
    quarantine_key = _quarantine(ctx, job, index, data)
    log.warning("job %s image %s of user %s withheld: flagged by %s (categories %s, reason %r, sha256 %s, kept as %s)",
                job.id, index, job.user_id, ctx.checker.name, ",".join(verdict.categories) or "-", verdict.reason,
                digest, quarantine_key or "nothing")
    try:
        announce(ctx.events.redis, "content.output_flagged", userId=str(job.user_id), jobId=job.id,
                 data=json.dumps({"index": index, "categories": list(verdict.categories), "reason": verdict.reason,
                                  "checker": ctx.checker.name, "sha256": digest, "workflow": job.workflow,
                                  "quarantineKey": quarantine_key}))
    except redis.RedisError as exc:
        log.error("content.output_flagged of job %s image %s not announced: %s", job.id, index, exc)
    record_audit(ctx.events.redis, "output_flagged", "render.output", actor_id=job.user_id,
                 category=verdict.categories[0] if verdict.categories else None, severity="block",
                 subject=f"job:{job.id}", excerpt=(job.params or {}).get("prompt") or "",
                 detail={"index": index, "categories": list(verdict.categories), "reason": verdict.reason,
                         "checker": ctx.checker.name, "sha256": digest}, media_key=quarantine_key)
    return False


def _quarantine(ctx: RenderContext, job: jobs.ClaimedJob, index: int, data: bytes) -> str | None:
    """Keep a flagged image, as a labelled PNG, under ``quarantine/`` (served only by a signed URL,
    which only the admin audit log hands out). None when it is not an image or the store refused it:
    the image stays withheld all the same."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.format != "PNG":
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                data = buffer.getvalue()
        data = label_png(data, _label(ctx, job, index), ctx.labels.secret)
        return ctx.storage.put(content_key(data, "png", QUARANTINE_PREFIX.rstrip("/")), data)
    except (OSError, SyntaxError, ValueError, StorageError) as exc:
        log.error("job %s image %s: the flagged image was not kept for moderators (%s)", job.id, index, exc)
        return None


def _label(ctx: RenderContext, job: jobs.ClaimedJob, index: int) -> ImageLabel:
    """The implicit label of one image. Its output id is chosen now (the same for every attempt)
    and the time is the job's admission, so a repeated attempt writes identical files."""
    output_id = uuid.uuid5(uuid.NAMESPACE_URL, f"aigc-output:{job.id}:{index}").hex
    created = job.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return ImageLabel(producer=ctx.labels.producer, produce_id=output_id, job_id=job.id, generated_at=created)


def _fetched_thumbnail(job: jobs.ClaimedJob, ref: ImageRef | None, fetch: Future[bytes] | None) -> bytes | None:
    """ComfyUI's thumbnail of an image, fetched beside the original; None (the worker makes one)
    when it has none to give."""
    if ref is None or fetch is None:  # ComfyUI made no thumbnail of this image
        return None
    try:
        return fetch.result()
    except ComfyUIError as exc:
        log.warning("job %s: ComfyUI's thumbnail %s not fetched (%s); making one here", job.id, ref.filename, exc)
        return None


def _thumbnail_size(width: int, height: int) -> tuple[int, int]:
    """The size of an image's thumbnail: within THUMBNAIL_SIZE × THUMBNAIL_SIZE, never larger
    than the image, the aspect ratio kept (Pillow's ``thumbnail`` rule)."""
    scale = min(1.0, THUMBNAIL_SIZE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _made_thumbnail(size: tuple[int, int], made: bytes, label: ImageLabel, secret: bytes) -> bytes | None:
    """ComfyUI's thumbnail of an original of ``size``, labelled, when it is a still WebP of the
    size the original's needs (rounding aside); else None, and the worker makes its own."""
    try:
        made_width, made_height = webp_size(made)
        expected_width, expected_height = _thumbnail_size(*size)
        if abs(made_width - expected_width) > 1 or abs(made_height - expected_height) > 1:
            return None
        return label_webp(made, label, secret)
    except ValueError:
        return None


def _store(storage: Storage, index: int, data: bytes, label: ImageLabel, secret: bytes,
           made_thumbnail: bytes | None = None) -> jobs.OutputFile:
    """Keep the original (as PNG) and a WebP thumbnail that fits in 512×512, both labelled.

    A whole PNG (``whole_png_size``: nothing cut or corrupted on its way) with a thumbnail that
    ComfyUI made from the same pixels (``made_thumbnail``) is an image: it is stored as it came,
    labelled, with that thumbnail. Anything else is decoded here (the decode is the proof) and
    gets a thumbnail made here: decoding a 512×512 PNG takes 4–5 ms, the WebP encode 3 more."""
    try:
        size = whole_png_size(data)
    except ValueError as exc:
        raise ComfyUIError(f"ComfyUI handed over a broken image ({exc}).", code="OUTPUT_UNREADABLE") from exc
    thumb_bytes = _made_thumbnail(size, made_thumbnail, label, secret) if size and made_thumbnail else None
    if thumb_bytes is not None:
        (width, height), data = size, label_png(data, label, secret)
    else:
        width, height, data, thumb_bytes = _decode_and_thumbnail(data, label, secret)
    digest = hashlib.sha256(data).hexdigest()  # the key's and the row's (0.3 ms for a 512² PNG)
    image_key = storage.put(digest_key(digest, "png", "images"), data)
    thumbnail_key = storage.put(content_key(thumb_bytes, "webp", "thumbs"), thumb_bytes)
    return jobs.OutputFile(index=index, image_key=image_key, thumbnail_key=thumbnail_key, width=width,
                           height=height, file_size=len(data), sha256=digest, output_id=label.produce_id)


def _decode_and_thumbnail(data: bytes, label: ImageLabel, secret: bytes) -> tuple[int, int, bytes, bytes]:
    """The original's size, the original labelled (as PNG) and a thumbnail made here; decoding
    the original is what proves it an image."""
    try:
        with Image.open(io.BytesIO(data)) as original:
            original.load()
            width, height = original.size
            if original.format != "PNG":
                buffer = io.BytesIO()
                original.save(buffer, format="PNG")
                data = buffer.getvalue()
            thumbnail = original.convert("RGBA" if original.mode in ("RGBA", "LA", "P") else "RGB")
        data = label_png(data, label, secret)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ComfyUIError("ComfyUI handed over a file that is not an image.", code="OUTPUT_UNREADABLE") from exc
    thumbnail.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    # method 0: two thirds of the encode time of method 2 (a quarter of the default, 4), ~10 % more bytes
    return width, height, data, encode_derived(thumbnail, "WEBP", label, secret, quality=80, method=0)


def fail_and_refund(ctx: RenderContext, job: RenderJob, code: str, message: str) -> bool:
    """Fail a job from outside its worker (the reconciler): charge what was delivered, return
    the rest of the hold. False when the job had finished already."""
    return _finish(ctx, job, "failed", code=code, error_class="system", message=message)


def _finish(ctx: RenderContext, job: RenderJob | jobs.ClaimedJob, status: str, *,
            code: str | None = None, error_class: str | None = None, message: str | None = None) -> bool:
    """Record the final state, then settle the hold and announce the outcome; False when the
    job had finished already. Neither waits for credits or Redis beyond the outbox's retries."""
    with ctx.db.transaction() as session:
        changed = jobs.finish_job(session, job.id, status, error_code=code, error_class=error_class,
                                  error_message=message)
        finished = ctx.outbox.read_finished(session, job.id) if changed else None
    if finished is None:
        log.info("job %s was already finished; not finishing it again", job.id)
        return False
    _complete(ctx, job, status, code, finished)
    return True


def _complete(ctx: RenderContext, job: RenderJob | jobs.ClaimedJob, status: str, code: str | None,
              finished: jobs.FinishedJob) -> None:
    """After the final state committed: count it, settle the hold and announce the outcome."""
    render_metrics.job_finished(job, status, code)
    if ctx.state is not None:
        ctx.state.count(status)
    row = ctx.outbox.complete(job.id, finished)
    if row.settled_at is not None:  # else the reconciler settles it later, unobserved: the
        render_metrics.job_settled(row)  # histograms are a sample of the jobs that settled at once


def _publish(ctx: RenderContext, job: jobs.ClaimedJob, event_type: str, data: dict[str, Any]) -> None:
    """Live events are best effort: the job row is the truth, and a Redis outage must not
    fail a render that ComfyUI is finishing."""
    try:
        ctx.events.publish(job.user_id, event_type, {"jobId": job.id, **data}, job_id=job.id)
    except redis.RedisError as exc:
        log.warning("event %s of job %s not published: %s", event_type, job.id, exc)


def _wake_scheduler(ctx: RenderContext) -> None:
    """A slot is free: tell the scheduler now rather than at its next pass."""
    try:
        ctx.fair.wake()
    except redis.RedisError:
        pass


class _Hooks:
    """Progress (throttled; stored on the row every PROGRESS_STORE_SECONDS), previews
    (downscaled WebP, throttled) and the cancel flag (the signal in Redis twice a second, the
    row every CANCEL_ROW_SECONDS or with a progress store)."""

    def __init__(self, ctx: RenderContext, job: jobs.ClaimedJob) -> None:
        self.ctx = ctx
        self.job = job
        now = time.monotonic()  # the claim just read and wrote the row: no store or poll needed yet
        self.last_published = 0.0
        self.last_stored = now
        self.last_read = now
        self.last_preview = 0.0
        self.last_percent = -1
        self.last_step = (0, 0)
        self.cancelled = False

    def progress(self, step: int, total: int, percent: int) -> None:
        if percent < self.last_percent:
            return  # a re-run (the thumbnail chain failed) counts from below where the first run got
        now = time.monotonic()
        final_step = total > 0 and step == total and (step, total) != self.last_step
        if (now - self.last_published < PROGRESS_INTERVAL_SECONDS and not final_step) or \
                (percent == self.last_percent and not final_step):
            return
        first = self.last_percent < 0  # the attempt's first progress: ComfyUI began sampling
        self.last_published, self.last_percent, self.last_step = now, percent, (step, total)
        _publish(self.ctx, self.job, "job.progress", {"step": step, "totalSteps": total, "percent": percent})
        if first or now - self.last_stored >= PROGRESS_STORE_SECONDS:
            self.last_stored = self.last_read = now
            with self.ctx.db.transaction() as session:
                self.cancelled = jobs.record_progress(session, self.job.id, percent, first=first) or self.cancelled

    def preview(self, image: bytes) -> None:
        now = time.monotonic()
        if now - self.last_preview < self.ctx.config.preview_interval or self.ctx.checker.name != "none":
            return  # with an output check, nothing of an image is shown before it passed
        self.last_preview = now
        try:
            with Image.open(io.BytesIO(image)) as frame:
                small = frame.convert("RGB")
        except (OSError, SyntaxError, ValueError):
            return
        size = self.ctx.config.preview_size
        small.thumbnail((size, size))
        buffer = io.BytesIO()
        small.save(buffer, format="WEBP", quality=60)
        data_url = "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        try:
            self.ctx.events.publish(self.job.user_id, "job.preview", {"jobId": self.job.id, "image": data_url})
        except redis.RedisError:
            pass  # a lost preview is replaced by the next one

    def should_cancel(self) -> bool:
        now = time.monotonic()
        if self.ctx.state is not None and self.ctx.state.hand_back.is_set():
            return True  # interrupt the prompt; render_job hands the job back
        if not self.cancelled:
            try:
                self.cancelled = self.ctx.cancels.received(self.job.id)
            except redis.RedisError:
                self.last_read = float("-inf")  # Redis is away: read the row now
        if not self.cancelled and now - self.last_read >= CANCEL_ROW_SECONDS:
            self.last_read = now
            with self.ctx.db.transaction() as session:
                self.cancelled = jobs.touch(session, self.job.id)
        return self.cancelled
