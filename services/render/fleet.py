"""The fleet of render workers as operators see it: who is there, what each is doing, and
which ones an administrator has drained.

Each worker's heartbeat (``services.render_worker.heartbeat``) writes a summary of itself
into the hash ``render:workers`` (field: its name): host, ComfyUI URL and version, devices,
models, loaded checkpoint, workflows, prompts in flight, jobs done and failed, its state
(``active`` or ``draining``) and the time of the beat. The hash outlives the worker, so a
worker that died is listed as ``dead`` (its liveness key ``render:alive:<id>`` expired)
until it has been silent for ``FORGET_SECONDS``.

``render:drain:<name>`` is an administrator's drain: the worker of that name stops
consuming on its next beat and stays alive (its jobs in flight finish) until the flag is
removed (resume). The flag has no expiry, so a drained host restarted for maintenance
stays drained until someone resumes it.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

import redis

from shared.db import isoformat, utcnow

from services.render.catalog import alive_key

log = logging.getLogger(__name__)

REGISTRY_KEY = "render:workers"
DRAIN_PREFIX = "render:drain:"
FORGET_SECONDS = 24 * 3600


def drain_key(name: str) -> str:
    return DRAIN_PREFIX + name


def drain_requested(redis_client: redis.Redis, name: str) -> bool:
    return bool(redis_client.exists(drain_key(name)))


def set_drain(redis_client: redis.Redis, name: str, drained: bool) -> None:
    if drained:
        redis_client.set(drain_key(name), isoformat(utcnow()))
    else:
        redis_client.delete(drain_key(name))


def record(redis_client: redis.Redis, summary: dict[str, Any]) -> None:
    """Write one worker's summary (its heartbeat)."""
    redis_client.hset(REGISTRY_KEY, summary["name"], json.dumps(summary))


def known(redis_client: redis.Redis, name: str) -> bool:
    return bool(redis_client.hexists(REGISTRY_KEY, name))


def _parse(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).rstrip("Z"))
    except ValueError:
        return None


def list_workers(redis_client: redis.Redis) -> list[dict[str, Any]]:
    """Every worker seen within ``FORGET_SECONDS``, by name, with its state: ``active``,
    ``draining`` (SIGTERM or an administrator's drain) or ``dead`` (heartbeat expired)."""
    entries = redis_client.hgetall(REGISTRY_KEY)
    summaries = []
    for name, raw in sorted(entries.items()):
        try:
            summaries.append(json.loads(raw))
        except ValueError:
            log.warning("ignoring the malformed fleet entry of %s", name)
    if not summaries:
        return []
    pipe = redis_client.pipeline(transaction=False)
    for summary in summaries:
        pipe.exists(alive_key(summary.get("workerId") or ""))
        pipe.exists(drain_key(summary["name"]))
    answers = pipe.execute()
    forget_before = utcnow() - timedelta(seconds=FORGET_SECONDS)
    workers = []
    for index, summary in enumerate(summaries):
        alive, drained = answers[2 * index], answers[2 * index + 1]
        beat = _parse(summary.get("lastHeartbeat"))
        if not alive and (beat is None or beat < forget_before):
            redis_client.hdel(REGISTRY_KEY, summary["name"])
            continue
        summary["state"] = summary.get("state", "active") if alive else "dead"
        summary["drainRequested"] = bool(drained)
        if not alive:
            summary["inFlight"] = 0
        workers.append(summary)
    return workers
