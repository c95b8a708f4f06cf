"""What each live render worker can render, kept in Redis with a heartbeat that expires.

A worker reads its ComfyUI's ``/object_info`` and ``/system_stats`` at start and every
``object_info_seconds``, and writes ``catalog:worker:<workerId>`` every 10 s (TTL 30 s):
models by kind, samplers, schedulers, node classes, ComfyUI version, GPU/VRAM, and the
workflows (with the variant) it can run. Independently of ComfyUI it refreshes
``render:alive:<workerId>``, the liveness the reconciler trusts. The gateway reads only
these keys, so no user request ever waits on ComfyUI.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable

import redis

from shared.db import isoformat, utcnow

from .comfyui import ComfyUIClient, ComfyUIError, combo_choices
from .workflows import Template

log = logging.getLogger(__name__)

KEY_PREFIX = "catalog:worker:"
ALIVE_PREFIX = "render:alive:"
CATALOG_TTL_SECONDS = 30
REFRESH_SECONDS = 10
# Where each model kind is listed in /object_info: (node class, input name).
MODEL_INPUTS = {
    "checkpoints": ("CheckpointLoaderSimple", "ckpt_name"),
    "loras": ("LoraLoader", "lora_name"),
    "upscale_models": ("UpscaleModelLoader", "model_name"),
    "diffusion_models": ("UNETLoader", "unet_name"),
    "text_encoders": ("DualCLIPLoader", "clip_name1"),
    "vaes": ("VAELoader", "vae_name"),
    "samplers": ("KSampler", "sampler_name"),
    "schedulers": ("KSampler", "scheduler"),
}
MODEL_KINDS = ("checkpoints", "loras", "upscale_models", "diffusion_models", "text_encoders", "vaes")


def catalog_key(worker_id: str) -> str:
    return KEY_PREFIX + worker_id


def alive_key(worker_id: str) -> str:
    return ALIVE_PREFIX + worker_id


def worker_alive(redis_client: redis.Redis, worker_id: str | None) -> bool:
    return bool(worker_id) and bool(redis_client.exists(alive_key(worker_id)))


def choices_from_object_info(object_info: dict[str, Any]) -> dict[str, list[str]]:
    """Every catalog kind's names, read from a full ``/object_info``."""
    found: dict[str, list[str]] = {}
    for kind, (node_class, input_name) in MODEL_INPUTS.items():
        spec = object_info.get(node_class, {}).get("input", {})
        found[kind] = combo_choices(spec.get("required", {}).get(input_name)
                                    or spec.get("optional", {}).get(input_name))
    return found


def runnable_workflows(templates: dict[str, Template], node_classes: set[str],
                       choices: dict[str, list[str]]) -> dict[str, str]:
    """Workflow name → the first variant this ComfyUI can run."""
    runnable = {}
    for name, template in sorted(templates.items()):
        variant = template.variant_for(node_classes, choices)
        if variant is not None:
            runnable[name] = variant.name
    return runnable


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


def publish_catalog(redis_client: redis.Redis, catalog: dict[str, Any]) -> None:
    redis_client.set(catalog_key(catalog["workerId"]), json.dumps(catalog), ex=CATALOG_TTL_SECONDS)


def read_live_catalogs(redis_client: redis.Redis) -> list[dict[str, Any]]:
    """Catalogs of every worker that refreshed within the TTL, sorted by worker id.

    SCAN walks the whole keyspace, so callers on a hot path cache the answer briefly
    (the gateway keeps it for ``CATALOG_CACHE_SECONDS``).
    """
    keys = sorted(redis_client.scan_iter(match=KEY_PREFIX + "*", count=1000))
    catalogs = []
    for raw in redis_client.mget(keys) if keys else []:
        if raw is None:
            continue  # expired between SCAN and MGET
        try:
            catalogs.append(json.loads(raw))
        except ValueError:
            log.warning("ignoring a malformed worker catalog")
    return catalogs


def workflow_names(catalog: dict[str, Any]) -> list[str]:
    return list(catalog.get("workflows") or [])


def merged_choices(catalogs: list[dict[str, Any]], workflow: str | None = None) -> dict[str, list[str]]:
    """Union of the live workers' catalog kinds, in first-seen order; only workers that can
    run ``workflow`` when it is given."""
    merged: dict[str, list[str]] = {kind: [] for kind in MODEL_INPUTS}
    for catalog in catalogs:
        if workflow is not None and workflow not in workflow_names(catalog):
            continue
        for kind, names in merged.items():
            names.extend(name for name in catalog.get(kind, []) if name not in names)
    return merged


class CatalogPublisher(threading.Thread):
    """Daemon thread: the liveness key every tick, the catalog whenever ComfyUI answers."""

    def __init__(self, comfyui: ComfyUIClient, redis_client: redis.Redis, worker_id: str,
                 templates: Callable[[], dict[str, Template]], queues: list[str], slots: int, *,
                 interval: float = REFRESH_SECONDS, alive_ttl: int = CATALOG_TTL_SECONDS,
                 object_info_seconds: float = 60.0) -> None:
        super().__init__(name="render-catalog", daemon=True)
        self.comfyui = comfyui
        self.redis = redis_client
        self.worker_id = worker_id
        self.templates = templates
        self.queues = queues
        self.slots = slots
        self.interval = interval
        self.alive_ttl = alive_ttl
        self.object_info_seconds = object_info_seconds
        self.catalog: dict[str, Any] | None = None
        self._collected_at = 0.0
        self._stopped = threading.Event()

    def refresh(self) -> bool:
        try:
            self.redis.set(alive_key(self.worker_id), "1", ex=self.alive_ttl)
            now = time.monotonic()
            if self.catalog is None or now - self._collected_at >= self.object_info_seconds:
                self.catalog = collect_catalog(self.comfyui, self.worker_id, self.templates(), self.queues,
                                               self.slots)
                self._collected_at = now
            else:  # a cheap probe each beat: a dead ComfyUI stops being advertised at once
                self.catalog["devices"] = devices(self.comfyui.system_stats())
                self.catalog["updatedAt"] = isoformat(utcnow())
            publish_catalog(self.redis, self.catalog)
            return True
        except ComfyUIError as exc:
            log.warning("worker catalog not refreshed (ComfyUI): %s", exc)
            self.catalog = None
            self.redis.delete(catalog_key(self.worker_id))  # a dead ComfyUI is not advertised
            return False
        except redis.RedisError as exc:
            log.warning("worker catalog not refreshed (Redis): %s", exc)
            return False

    def run(self) -> None:
        while not self._stopped.is_set():
            try:
                self.refresh()
            except redis.RedisError as exc:
                log.warning("worker heartbeat failed: %s", exc)
            self._stopped.wait(self.interval)

    def stop(self) -> None:
        """Stop beating and withdraw the catalog (after the thread's last write, not before it)."""
        self._stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)
        try:
            self.redis.delete(catalog_key(self.worker_id), alive_key(self.worker_id))
        except redis.RedisError:
            pass
