"""The worker's heartbeat: its liveness key every tick, and its ComfyUI's catalog whenever
ComfyUI answers (the format is the render domain's, ``services.render.catalog``), with
``loadedModel``: the checkpoint of the last job the worker ran (ComfyUI does not report
which model it holds), which the scheduler uses for affinity.

A worker reads its ComfyUI's ``/object_info`` and ``/system_stats`` at start and every
``object_info_seconds``; between full reads a cheap ``/system_stats`` probe each beat
keeps a dead ComfyUI from being advertised.

Each beat also writes the worker's summary for operators (``services.render.fleet``:
state, prompts in flight, jobs done and failed, loaded model) and obeys an
administrator's drain or resume (``on_pause``). When what the scheduler plans with changes
(the worker joins or withdraws, or its workflows, models, slots or state change), the beat
tells it (``on_change``: ``FairQueue.fleet_changed``), so it reads the catalogs again at once.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import redis

from services.render.catalog import (CATALOG_TTL_SECONDS, MODEL_KINDS, REFRESH_SECONDS, alive_key,
                                     catalog_key, publish_catalog, runnable_workflows)
from services.render import fleet
from services.render.workflows import THUMBNAIL_NODE_CLASSES, Template, thumbnail_chain
from services.render.metrics import COMFYUI_UP
from services.render_worker.comfyui import ComfyUIClient, ComfyUIError, combo_choices
from services.render_worker.drain import WorkerState
from shared.db import isoformat, utcnow
from shared.outage import Outage

log = logging.getLogger(__name__)

# Where each catalog kind is listed in /object_info: (node class, input name).
OBJECT_INFO_INPUTS = {
    "checkpoints": ("CheckpointLoaderSimple", "ckpt_name"),
    "loras": ("LoraLoader", "lora_name"),
    "upscale_models": ("UpscaleModelLoader", "model_name"),
    "diffusion_models": ("UNETLoader", "unet_name"),
    "text_encoders": ("DualCLIPLoader", "clip_name1"),
    "vaes": ("VAELoader", "vae_name"),
    "samplers": ("KSampler", "sampler_name"),
    "schedulers": ("KSampler", "scheduler"),
}


# The parts of a catalog the scheduler plans with (``services.render_worker.scheduler``).
PLANNED_KEYS = ("workflows", "slots", "state") + MODEL_KINDS + ("builtin_vaes",)


def planned(catalog: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the scheduler plans with of ``catalog`` (None: no catalog is advertised)."""
    return None if catalog is None else {key: catalog.get(key) for key in PLANNED_KEYS}


# What VAELoader offers beside the files of models/vae: decoders ComfyUI builds from
# models/vae_approx, and decoding without a VAE. Options of ComfyUI, not model files.
BUILTIN_VAES = frozenset({"taesd", "taesdxl", "taesd3", "taef1", "pixel_space"})


def choices_from_object_info(object_info: dict[str, Any]) -> dict[str, list[str]]:
    """Every catalog kind's names, read from a full ``/object_info``; VAE files (``vaes``)
    apart from ComfyUI's built-in VAE options (``builtin_vaes``)."""
    found: dict[str, list[str]] = {}
    for kind, (node_class, input_name) in OBJECT_INFO_INPUTS.items():
        spec = object_info.get(node_class, {}).get("input", {})
        found[kind] = combo_choices(spec.get("required", {}).get(input_name)
                                    or spec.get("optional", {}).get(input_name))
    found["builtin_vaes"] = [name for name in found["vaes"] if name in BUILTIN_VAES]
    found["vaes"] = [name for name in found["vaes"] if name not in BUILTIN_VAES]
    return found


def usable_node_classes(object_info: dict[str, Any]) -> set[str]:
    """The node classes of a full ``/object_info`` the worker may put in a graph: all, but the
    thumbnail chain's (``thumbnail_chain``) when this ComfyUI's own specs lack an input it sends or
    a choice it makes (another version of those nodes would refuse every prompt)."""
    classes = set(object_info)
    for node in thumbnail_chain("thumbnail", ["0", 0], 0).values():
        spec = object_info.get(node["class_type"], {}).get("input", {})
        accepted = {**spec.get("required", {}), **spec.get("optional", {})}
        for name, value in node["inputs"].items():
            choices = combo_choices(accepted.get(name))
            if name not in accepted or (choices and value not in choices):
                return classes - THUMBNAIL_NODE_CLASSES
    return classes


def devices(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """GPU name, type and VRAM from ``/system_stats``."""
    return [{"name": d.get("name"), "type": d.get("type"), "vramTotal": d.get("vram_total"),
             "vramFree": d.get("vram_free")} for d in stats.get("devices", [])]


def collect_catalog(comfyui: ComfyUIClient, worker_id: str, templates: dict[str, Template],
                    queues: list[str], slots: int) -> dict[str, Any]:
    object_info = comfyui.object_info_all()
    stats = comfyui.system_stats()
    choices = choices_from_object_info(object_info)
    node_classes = set(object_info)
    consumed = {queue.rsplit(".", 1)[-1] for queue in queues}  # queues are "<base>.<workflow>"
    runnable = {name: variant for name, variant in runnable_workflows(templates, node_classes, choices).items()
                if name in consumed}  # a workflow added after start is offered once a worker consumes it
    return {
        "workerId": worker_id,
        "comfyuiUrl": comfyui.base_url,
        "comfyuiVersion": stats.get("system", {}).get("comfyui_version"),
        **{kind: names for kind, names in choices.items()},
        "nodes": sorted(node_classes),
        "devices": devices(stats),
        "workflows": sorted(runnable),
        "variants": runnable,
        "queues": queues,
        "slots": slots,
        "updatedAt": isoformat(utcnow()),
    }


class CatalogPublisher(threading.Thread):
    """Daemon thread: the liveness key every tick, the catalog whenever ComfyUI answers."""

    def __init__(self, comfyui: ComfyUIClient, redis_client: redis.Redis, worker_id: str,
                 templates: Callable[[], dict[str, Template]], queues: list[str], slots: int, *,
                 interval: float = REFRESH_SECONDS, alive_ttl: int = CATALOG_TTL_SECONDS,
                 object_info_seconds: float = 60.0, state: WorkerState | None = None,
                 on_pause: Callable[[bool], None] | None = None,
                 on_change: Callable[[], None] | None = None) -> None:
        super().__init__(name="render-catalog", daemon=True)
        self.state = state
        self.on_pause = on_pause
        self.on_change = on_change
        self._announced: dict[str, Any] | None = None  # planned(the catalog last advertised)
        self.comfyui = comfyui
        self.redis = redis_client
        self.worker_id = worker_id
        self.node = fleet.node_of(worker_id)
        self.templates = templates
        self.queues = queues
        self.slots = slots
        self.interval = interval
        self.alive_ttl = alive_ttl
        self.object_info_seconds = object_info_seconds
        self.catalog: dict[str, Any] | None = None
        self._collected_at = 0.0
        self._stopped = threading.Event()
        self._pause_outage = Outage(log, f"render worker {self.node}'s drain or resume")

    def refresh(self) -> bool:
        try:
            self.redis.set(alive_key(self.worker_id), "1", ex=self.alive_ttl)
            if self.state is not None:
                self._obey_drain()
            now = time.monotonic()
            if self.catalog is None or now - self._collected_at >= self.object_info_seconds:
                self.catalog = collect_catalog(self.comfyui, self.worker_id, self.templates(), self.queues,
                                               self.slots)
                self._collected_at = now
            else:  # a cheap probe each beat: a dead ComfyUI stops being advertised at once
                self.catalog["devices"] = devices(self.comfyui.system_stats())
                self.catalog["updatedAt"] = isoformat(utcnow())
            if self.state is not None:
                self.catalog.update(self._live())
            publish_catalog(self.redis, self.catalog)
            self._announce(self.catalog)
            COMFYUI_UP.labels(self.node, self.comfyui.base_url).set(1)
            self._record(reachable=True)
            return True
        except ComfyUIError as exc:
            COMFYUI_UP.labels(self.node, self.comfyui.base_url).set(0)
            log.warning("worker catalog not refreshed (ComfyUI): %s", exc)
            self.catalog = None
            self.redis.delete(catalog_key(self.worker_id))  # a dead ComfyUI is not advertised
            self._announce(None)
            self._record(reachable=False)
            return False
        except redis.RedisError as exc:
            log.warning("worker catalog not refreshed (Redis): %s", exc)
            return False

    def _announce(self, catalog: dict[str, Any] | None) -> None:
        """Tell the scheduler when what it plans with changed since the last catalog advertised."""
        now = planned(catalog)
        if now != self._announced and self.on_change is not None:
            self.on_change()
        self._announced = now

    def _obey_drain(self) -> None:
        """Stop or resume consuming as an administrator asked (``services.render.fleet``). The
        worker is told over the broker; when that fails (the broker unreachable), the beat goes
        on and the next one asks again."""
        wanted = fleet.drain_requested(self.redis, self.node)
        if wanted != self.state.paused and self.on_pause is not None:
            try:
                self.on_pause(wanted)
            except Exception as exc:
                self._pause_outage.failed(exc, "trying again at the next beat")
                return
            self._pause_outage.passed()
            self.state.paused = wanted
            log.warning("render worker %s %s by an administrator", self.node,
                        "drained" if wanted else "resumed")

    def _live(self) -> dict[str, Any]:
        state = self.state
        return {"name": state.name, "host": state.host, "node": self.node, "state": state.state,
                "inFlight": state.in_flight, "done": state.done, "failed": state.failed,
                "loadedModel": state.loaded_model, "startedAt": state.started_at}

    def _record(self, reachable: bool) -> None:
        """The operator's row of this worker (``GET /api/admin/workers``)."""
        if self.state is None:
            return
        catalog = self.catalog or {}
        fleet.record(self.redis, {
            **self._live(), "workerId": self.worker_id, "comfyuiUrl": self.comfyui.base_url,
            "comfyuiReachable": reachable, "comfyuiVersion": catalog.get("comfyuiVersion"),
            "devices": catalog.get("devices", []),
            "models": {kind: catalog.get(kind, []) for kind in MODEL_KINDS},
            "workflows": catalog.get("workflows", []), "queues": self.queues, "slots": self.slots,
            "lastHeartbeat": isoformat(utcnow())})

    def run(self) -> None:
        """Beat until stopped, whatever one beat meets: a heartbeat thread that died would leave a
        working worker looking dead, and the reconciler would take its running jobs back."""
        outage = Outage(log, "worker heartbeat")
        while not self._stopped.is_set():
            try:
                self.refresh()
            except Exception as exc:
                outage.failed(exc, f"beating again in {self.interval} s")
            else:
                outage.passed()
            self._stopped.wait(self.interval)

    def stop(self) -> None:
        """Stop beating and withdraw the catalog (after the thread's last write, not before it)."""
        self._stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)
        try:
            self.redis.delete(catalog_key(self.worker_id), alive_key(self.worker_id))
            self._announce(None)
        except redis.RedisError:
            pass
