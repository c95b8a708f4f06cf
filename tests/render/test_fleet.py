"""The fleet registry: live, draining and dead workers, the drain flag, and forgetting."""
from __future__ import annotations

from datetime import timedelta

import redis as redis_lib

from services.render import fleet
from services.render.catalog import alive_key
from shared.db import isoformat, utcnow


def _beat(client, name: str, state: str = "active", ago: timedelta = timedelta(0), alive: bool = True) -> None:
    worker_id = f"{name}@host#boot"
    fleet.record(client, {"name": name, "workerId": worker_id, "state": state, "inFlight": 1,
                          "lastHeartbeat": isoformat(utcnow() - ago)})
    if alive:
        client.set(alive_key(worker_id), "1", ex=30)


def test_workers_are_listed_by_state_and_the_long_silent_are_forgotten(redis_url):
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    client.delete(fleet.REGISTRY_KEY)
    _beat(client, "a")
    _beat(client, "b", state="draining")
    _beat(client, "c", alive=False, ago=timedelta(minutes=5))
    _beat(client, "d", alive=False, ago=timedelta(seconds=fleet.FORGET_SECONDS + 60))
    fleet.set_drain(client, "b", True)

    rows = {row["name"]: row for row in fleet.list_workers(client)}
    assert {name: row["state"] for name, row in rows.items()} == {"a": "active", "b": "draining", "c": "dead"}
    assert rows["b"]["drainRequested"] and not rows["a"]["drainRequested"]
    assert rows["c"]["inFlight"] == 0, "a dead worker runs nothing"
    assert not client.hexists(fleet.REGISTRY_KEY, "d")

    fleet.set_drain(client, "b", False)
    assert not fleet.drain_requested(client, "b") and fleet.known(client, "a") and not fleet.known(client, "d")
    client.hset(fleet.REGISTRY_KEY, "broken", "{not json")
    assert "broken" not in {row["name"] for row in fleet.list_workers(client)}
    client.delete(fleet.REGISTRY_KEY, fleet.drain_key("b"), *[alive_key(f"{n}@host#boot") for n in "ab"])
