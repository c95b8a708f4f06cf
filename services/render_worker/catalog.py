"""What each live render worker can render, kept in Redis with a short TTL.

A worker writes ``catalog:worker:<workerId>`` every 10 s (TTL 30 s) from its ComfyUI's
``/object_info`` and ``/system_stats``; the gateway reads only these keys, so no user
request ever waits on ComfyUI. A worker whose ComfyUI stops answering simply expires.
"""
from __future__ import annotations

import json
import logging
import threading
from typing import Any

import redis

from shared.db import isoformat, utcnow

from .comfyui import ComfyUIClient, ComfyUIError, combo_choices

log = logging.getLogger(__name__)

KEY_PREFIX = "catalog:worker:"
CATALOG_TTL_SECONDS = 30
REFRESH_SECONDS = 10


def catalog_key(worker_id: str) -> str:
    return KEY_PREFIX + worker_id


def collect_catalog(comfyui: ComfyUIClient, worker_id: str, workflows: list[str]) -> dict[str, Any]:
    checkpoint_loader = comfyui.object_info("CheckpointLoaderSimple")
    sampler = comfyui.object_info("KSampler")
    stats = comfyui.system_stats()
    required = sampler.get("input", {}).get("required", {})
    return {
        "workerId": worker_id,
        "comfyuiUrl": comfyui.base_url,
        "comfyuiVersion": stats.get("system", {}).get("comfyui_version"),
        "checkpoints": combo_choices(checkpoint_loader.get("input", {}).get("required", {}).get("ckpt_name")),
        "samplers": combo_choices(required.get("sampler_name")),
        "schedulers": combo_choices(required.get("scheduler")),
        "workflows": workflows,
        "updatedAt": isoformat(utcnow()),
    }


def publish_catalog(redis_client: redis.Redis, catalog: dict[str, Any]) -> None:
    redis_client.set(catalog_key(catalog["workerId"]), json.dumps(catalog), ex=CATALOG_TTL_SECONDS)


def read_live_catalogs(redis_client: redis.Redis) -> list[dict[str, Any]]:
    """Catalogs of every worker that refreshed within the TTL, sorted by worker id."""
    keys = sorted(redis_client.scan_iter(match=KEY_PREFIX + "*", count=100))
    catalogs = []
    for raw in redis_client.mget(keys) if keys else []:
        if raw is None:
            continue  # expired between SCAN and MGET
        try:
            catalogs.append(json.loads(raw))
        except ValueError:
            log.warning("ignoring a malformed worker catalog")
    return catalogs


def merged_choices(catalogs: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Union of every live worker's checkpoints, samplers and schedulers, in first-seen order."""
    merged: dict[str, list[str]] = {"checkpoints": [], "samplers": [], "schedulers": []}
    for catalog in catalogs:
        for kind, names in merged.items():
            names.extend(name for name in catalog.get(kind, []) if name not in names)
    return merged


class CatalogPublisher(threading.Thread):
    """Daemon thread refreshing this worker's catalog until ``stop()``."""

    def __init__(self, comfyui: ComfyUIClient, redis_client: redis.Redis, worker_id: str,
                 workflows: list[str], interval: float = REFRESH_SECONDS) -> None:
        super().__init__(name="render-catalog", daemon=True)
        self.comfyui = comfyui
        self.redis = redis_client
        self.worker_id = worker_id
        self.workflows = workflows
        self.interval = interval
        self._stopped = threading.Event()

    def refresh(self) -> bool:
        try:
            publish_catalog(self.redis, collect_catalog(self.comfyui, self.worker_id, self.workflows))
            return True
        except (ComfyUIError, redis.RedisError) as exc:
            log.warning("worker catalog not refreshed: %s", exc)
            return False

    def run(self) -> None:
        while not self._stopped.is_set():
            self.refresh()
            self._stopped.wait(self.interval)

    def stop(self) -> None:
        self._stopped.set()
