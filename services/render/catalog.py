"""What each live render worker can render, as the render domain reads it from Redis.

Each worker writes ``catalog:worker:<workerId>`` (TTL 30 s, refreshed every 10 s; see
``services.render_worker.heartbeat``): models by kind, samplers, schedulers, node classes,
ComfyUI version, GPU/VRAM, and the workflows (with the variant) it can run. It refreshes
``render:alive:<workerId>`` independently of ComfyUI: the liveness the reconciler trusts.
Admission and ``/api/models`` read only these keys, so no user request ever waits on ComfyUI.
"""
from __future__ import annotations

import json
import logging
from typing import Any

import redis

from services.render.workflows import Template

log = logging.getLogger(__name__)

KEY_PREFIX = "catalog:worker:"
ALIVE_PREFIX = "render:alive:"
CATALOG_TTL_SECONDS = 30
REFRESH_SECONDS = 10
# Kinds of model files. ComfyUI's built-in VAE options (``pixel_space``, ``taesd``, …) are
# listed apart, as ``builtin_vaes``: they are not files a job can be charged for loading.
MODEL_KINDS = ("checkpoints", "loras", "upscale_models", "diffusion_models", "text_encoders", "vaes")
# Every kind of name a catalog lists: the model kinds, then ComfyUI's own options.
CATALOG_KINDS = MODEL_KINDS + ("builtin_vaes", "samplers", "schedulers")


def catalog_key(worker_id: str) -> str:
    return KEY_PREFIX + worker_id


def alive_key(worker_id: str) -> str:
    return ALIVE_PREFIX + worker_id


def worker_alive(redis_client: redis.Redis, worker_id: str | None) -> bool:
    return bool(worker_id) and bool(redis_client.exists(alive_key(worker_id)))


def runnable_workflows(templates: dict[str, Template], node_classes: set[str],
                       choices: dict[str, list[str]]) -> dict[str, str]:
    """Workflow name → the first variant this ComfyUI can run."""
    runnable = {}
    for name, template in sorted(templates.items()):
        variant = template.variant_for(node_classes, choices)
        if variant is not None:
            runnable[name] = variant.name
    return runnable


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
    merged: dict[str, list[str]] = {kind: [] for kind in CATALOG_KINDS}
    for catalog in catalogs:
        if workflow is not None and workflow not in workflow_names(catalog):
            continue
        for kind, names in merged.items():
            names.extend(name for name in catalog.get(kind, []) if name not in names)
    return merged


