"""The fleet of render workers as operators see it: who is there, what each is doing, and
which ones an administrator has drained.

A worker is known by its Celery node name ``<--name>@<host>`` (``node``): operators often
start every GPU host from the same compose file or manifest, so the ``--name`` alone (say
``gpu-0``) is not unique in a fleet, while the host part is. The node name, unlike the worker
id (``<node>#<boot token>``), stays the same when the worker restarts.

Each worker's heartbeat (``services.render_worker.heartbeat``) writes a summary of itself
into the hash ``render:workers`` (field: its node name): host, ComfyUI URL and version, devices,
models, loaded checkpoint, workflows, prompts in flight, jobs done and failed, its state
(``active`` or ``draining``) and the time of the beat. The hash outlives the worker, so a
worker that died is listed as ``dead`` (its liveness key ``render:alive:<id>`` expired)
until it has been silent for ``FORGET_SECONDS``.

``render:drain:<node>`` is an administrator's drain: the worker of that node name stops
consuming on its next beat and stays alive (its jobs in flight finish) until the flag is
removed (resume). The flag has no expiry, so a drained host restarted for maintenance
stays drained until someone resumes it. A flag of the form used before node names,
``render:drain:<--name>``, still drains every worker of that name, and resuming any of them
removes it, so a drain set before an upgrade survives the upgrade.
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


def node_of(worker_id: str) -> str:
    """The node name ``<--name>@<host>`` of the worker id ``<node>#<boot token>``."""
    return worker_id.partition("#")[0]


def drain_key(node: str) -> str:
    return DRAIN_PREFIX + node


def _drain_flags(node: str) -> tuple[str, str]:
    """The node's drain flag, and the flag of its ``--name`` alone as it was set before workers
    had node names."""
    return drain_key(node), drain_key(node.partition("@")[0])


def drain_requested(redis_client: redis.Redis, node: str) -> bool:
    return bool(redis_client.exists(*_drain_flags(node)))


def set_drain(redis_client: redis.Redis, node: str, drained: bool) -> None:
    if drained:
        redis_client.set(drain_key(node), isoformat(utcnow()))
    else:
        redis_client.delete(*_drain_flags(node))


def record(redis_client: redis.Redis, summary: dict[str, Any]) -> None:
    """Write one worker's summary (its heartbeat)."""
    redis_client.hset(REGISTRY_KEY, summary["node"], json.dumps(summary))


def nodes_named(redis_client: redis.Redis, name: str) -> list[str]:
    """The node names an operator's ``name`` may mean: itself when a worker has that node name,
    else every worker started with that ``--name`` (one on a fleet of unique names, several when
    hosts share a compose file)."""
    if redis_client.hexists(REGISTRY_KEY, name):
        return [name]
    nodes = []
    for node, raw in sorted(redis_client.hgetall(REGISTRY_KEY).items()):
        try:
            if json.loads(raw).get("name") == name:
                nodes.append(node)
        except ValueError:
            continue
    return nodes


def _parse(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).rstrip("Z"))
    except ValueError:
        return None


def list_workers(redis_client: redis.Redis) -> list[dict[str, Any]]:
    """Every worker seen within ``FORGET_SECONDS``, by node name, with its state: ``active``,
    ``draining`` (SIGTERM or an administrator's drain) or ``dead`` (heartbeat expired)."""
    entries = redis_client.hgetall(REGISTRY_KEY)
    summaries = []
    for node, raw in sorted(entries.items()):
        try:
            summaries.append({**json.loads(raw), "node": node})
        except ValueError:
            log.warning("ignoring the malformed fleet entry of %s", node)
    if not summaries:
        return []
    pipe = redis_client.pipeline(transaction=False)
    for summary in summaries:
        pipe.exists(alive_key(summary.get("workerId") or ""))
        pipe.exists(*_drain_flags(summary["node"]))
    answers = pipe.execute()
    forget_before = utcnow() - timedelta(seconds=FORGET_SECONDS)
    workers = []
    for index, summary in enumerate(summaries):
        alive, drained = answers[2 * index], answers[2 * index + 1]
        beat = _parse(summary.get("lastHeartbeat"))
        if not alive and (beat is None or beat < forget_before):
            redis_client.hdel(REGISTRY_KEY, summary["node"])
            continue
        summary["state"] = summary.get("state", "active") if alive else "dead"
        summary["drainRequested"] = bool(drained)
        if not alive:
            summary["inFlight"] = 0
        workers.append(summary)
    return workers
