"""A job's timing breakdown and the render metrics it feeds (``services/render/metrics.py``)."""
from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest

from services.render import metrics as render_metrics
from services.render_worker.pipeline import render_job

from tests.render_worker.helpers import admit, job_state
from tests.shared.test_metrics import samples


def _value(name: str, **labels: str) -> float:
    text = generate_latest(REGISTRY).decode()
    return sum(value for found, value in samples(text, name).items()
               if all(dict(found).get(key) == wanted for key, wanted in labels.items()))


def test_a_job_records_its_timing_breakdown_and_feeds_the_metrics(ctx, user_id):
    before = {"jobs": _value("render_jobs_total", workflow="text2img", outcome="succeeded"),
              "render": _value("render_seconds_count", workflow="text2img"),
              "wait": _value("render_queue_wait_seconds_count", workflow="text2img"),
              "overhead": _value("render_overhead_seconds_count", workflow="text2img")}
    job_id = admit(ctx, user_id, batchSize=2)
    render_job(job_id, ctx)

    job, _ = job_state(ctx, job_id)
    steps = [job.created_at, job.started_at, job.submitted_at, job.first_progress_at, job.last_image_at,
             job.finished_at, job.settled_at]
    assert all(step is not None for step in steps)
    assert steps == sorted(steps)  # queued → picked → submitted → first progress → last image → finished → settled
    assert list(render_metrics.timings(job)) == ["queuedAt", "pickedAt", "submittedAt", "firstProgressAt",
                                                 "lastImageAt", "finishedAt", "settledAt"]

    assert _value("render_jobs_total", workflow="text2img", outcome="succeeded") == before["jobs"] + 1
    assert _value("render_seconds_count", workflow="text2img") == before["render"] + 1
    assert _value("render_queue_wait_seconds_count", workflow="text2img") == before["wait"] + 1
    assert _value("render_overhead_seconds_count", workflow="text2img") == before["overhead"] + 1


def test_queue_depth_and_oldest_age_are_read_at_scrape_time(ctx, user_id):
    depth, oldest = render_metrics.queue_collectors(ctx.db)
    admit(ctx, user_id, queue="render.metrics-probe")
    measured = {family.name: {s.labels["queue"]: s.value for s in family.samples}
                for collector in (depth, oldest) for family in collector.collect()}
    assert measured["render_queue_depth"]["render.metrics-probe"] == 1
    assert measured["render_queue_oldest_age_seconds"]["render.metrics-probe"] >= 0


def test_comfyui_reachability_is_reported_per_worker_node_across_restarts(ctx, unique):
    """One series per worker, labelled with its node name (``<--name>@<host>``): the same while it
    waits for its ComfyUI at start (``__main__``) and once it beats, and after a restart."""
    from prometheus_client import REGISTRY

    from services.render.metrics import COMFYUI_UP
    from services.render_worker.comfyui import ComfyUIClient
    from services.render_worker.heartbeat import CatalogPublisher

    def up(worker: str, url: str) -> float | None:
        return REGISTRY.get_sample_value("render_comfyui_up", {"worker": worker, "comfyui": url})

    node = f"up-{unique}@host-a"
    COMFYUI_UP.labels(node, ctx.comfyui.base_url).set(0)  # as the worker waiting for its ComfyUI reports it
    answering = CatalogPublisher(ctx.comfyui, ctx.events.redis, f"{node}#boot1", ctx.templates.all, [], 1)
    assert answering.refresh() and up(node, ctx.comfyui.base_url) == 1, "the series of the wait is the one set up"
    assert up(f"{node}#boot1", ctx.comfyui.base_url) is None, "no series per start"
    gone = ComfyUIClient("http://127.0.0.1:9", retry_seconds=0)
    silent = CatalogPublisher(gone, ctx.events.redis, f"down-{unique}@host-a#boot2", ctx.templates.all, [], 1)
    assert not silent.refresh() and up(f"down-{unique}@host-a", gone.base_url) == 0
    answering.stop()
    silent.stop()
