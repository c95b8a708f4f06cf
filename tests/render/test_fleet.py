"""The fleet registry: live, draining and dead workers, the drain flag, forgetting, and workers
known by their node name ``<--name>@<host>``."""
from __future__ import annotations

import json
from datetime import timedelta

import redis as redis_lib

from services.render import fleet
from services.render.catalog import alive_key
from shared.db import isoformat, utcnow


def _beat(client, name: str, state: str = "active", ago: timedelta = timedelta(0), alive: bool = True,
          host: str = "host") -> None:
    worker_id = f"{name}@{host}#boot"
    fleet.record(client, {"name": name, "host": host, "node": fleet.node_of(worker_id), "workerId": worker_id,
                          "state": state, "inFlight": 1, "lastHeartbeat": isoformat(utcnow() - ago)})
    if alive:
        client.set(alive_key(worker_id), "1", ex=30)


def test_workers_are_listed_by_state_and_the_long_silent_are_forgotten(redis_url):
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    client.delete(fleet.REGISTRY_KEY)
    _beat(client, "a")
    _beat(client, "b", state="draining")
    _beat(client, "c", alive=False, ago=timedelta(minutes=5))
    _beat(client, "d", alive=False, ago=timedelta(seconds=fleet.FORGET_SECONDS + 60))
    fleet.set_drain(client, "b@host", True)

    rows = {row["name"]: row for row in fleet.list_workers(client)}
    assert {name: row["state"] for name, row in rows.items()} == {"a": "active", "b": "draining", "c": "dead"}
    assert rows["b"]["drainRequested"] and not rows["a"]["drainRequested"]
    assert rows["c"]["inFlight"] == 0, "a dead worker runs nothing"
    assert not client.hexists(fleet.REGISTRY_KEY, "d@host")

    fleet.set_drain(client, "b@host", False)
    assert not fleet.drain_requested(client, "b@host")
    assert fleet.nodes_named(client, "a") == ["a@host"] and fleet.nodes_named(client, "d") == []
    client.hset(fleet.REGISTRY_KEY, "broken", "{not json")
    assert "broken" not in {row["name"] for row in fleet.list_workers(client)}
    client.delete(fleet.REGISTRY_KEY, fleet.drain_key("b@host"), *[alive_key(f"{n}@host#boot") for n in "ab"])


def test_workers_of_one_name_on_two_hosts_are_two_workers(redis_url):
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    client.delete(fleet.REGISTRY_KEY)
    _beat(client, "gpu-0", host="host-a")
    _beat(client, "gpu-0", host="host-b")
    fleet.set_drain(client, "gpu-0@host-a", True)

    rows = {row["node"]: row for row in fleet.list_workers(client)}
    assert {node: row["drainRequested"] for node, row in rows.items()} == {"gpu-0@host-a": True,
                                                                          "gpu-0@host-b": False}
    assert fleet.nodes_named(client, "gpu-0") == ["gpu-0@host-a", "gpu-0@host-b"], "the name alone is ambiguous"
    assert fleet.nodes_named(client, "gpu-0@host-b") == ["gpu-0@host-b"]
    client.delete(fleet.REGISTRY_KEY, fleet.drain_key("gpu-0@host-a"),
                  *[alive_key(f"gpu-0@{host}#boot") for host in ("host-a", "host-b")])


def test_a_drain_set_before_node_names_still_drains_every_worker_of_that_name_until_resumed(redis_url):
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    client.set(fleet.DRAIN_PREFIX + "gpu-0", "2026-12-01T00:00:00Z")  # as the previous version wrote it
    try:
        assert fleet.drain_requested(client, "gpu-0@host-a") and fleet.drain_requested(client, "gpu-0@host-b")
        assert not fleet.drain_requested(client, "gpu-1@host-a")
        client.hset(fleet.REGISTRY_KEY, "gpu-0@host-b", json.dumps({"name": "gpu-0", "host": "host-b", "lastHeartbeat": isoformat(utcnow())}))
        assert [row["drainRequested"] for row in fleet.list_workers(client) if row["node"] == "gpu-0@host-b"] == [True]

        fleet.set_drain(client, "gpu-0@host-a", False)
        assert not fleet.drain_requested(client, "gpu-0@host-a")
        assert not client.exists(fleet.DRAIN_PREFIX + "gpu-0")
    finally:
        client.delete(fleet.DRAIN_PREFIX + "gpu-0")
        client.hdel(fleet.REGISTRY_KEY, "gpu-0@host-b")
