"""The worker's heartbeat tells the scheduler when the fleet changed, so a worker that joins,
drains or loses its ComfyUI is planned with on the scheduler's next pass."""
from __future__ import annotations

import copy
import logging
import time

from kombu.exceptions import OperationalError

from services.render import fleet
from services.render.catalog import alive_key
from services.render.scheduler import FairQueue
from services.render_worker.comfyui import ComfyUIClient
from services.render_worker.drain import WorkerState
from services.render.workflows import THUMBNAIL_NODE_CLASSES
from services.render_worker.heartbeat import CatalogPublisher, usable_node_classes


def _fleet(fair: FairQueue) -> str | None:
    return fair.redis.get(fair.fleet_key)


def test_the_heartbeat_tells_the_scheduler_when_a_worker_joins_changes_or_leaves(ctx, unique):
    fair = FairQueue(ctx.events.redis, f"heartbeat-test-{unique}")
    state = WorkerState(f"hb-{unique}", "host", drain_seconds=1)
    publisher = CatalogPublisher(ctx.comfyui, ctx.events.redis, f"hb-{unique}", ctx.templates.all, [], 2,
                                 state=state, on_change=fair.fleet_changed)
    try:
        assert publisher.refresh()
        joined = _fleet(fair)
        assert joined is not None, "a worker that joins is announced"
        assert fair.redis.lpop(fair.wake_key) is not None, "and the scheduler nudged"

        assert publisher.refresh()
        assert _fleet(fair) == joined, "a beat that changes nothing the scheduler plans with is not announced"

        state.paused = True  # an administrator's drain, obeyed
        assert publisher.refresh()
        drained = _fleet(fair)
        assert drained != joined, "a worker that drains is announced"

        publisher.comfyui = ComfyUIClient("http://127.0.0.1:9", retry_seconds=0)
        publisher.catalog = None  # the next beat reads the whole catalog again, and finds ComfyUI gone
        assert not publisher.refresh()
        assert _fleet(fair) != drained, "a worker whose ComfyUI is gone is announced: it no longer offers anything"
    finally:
        publisher.stop()
        for key in fair.redis.scan_iter(match=f"heartbeat-test-{unique}:*"):
            fair.redis.delete(key)


def test_a_drain_the_broker_cannot_carry_is_asked_again_and_the_beat_goes_on(ctx, unique, caplog):
    """The broker away is a warning (routine while it restarts), and its return is said."""
    caplog.set_level(logging.INFO, logger="services.render_worker.heartbeat")
    name = f"hb-{unique}"
    state = WorkerState(name, "host", drain_seconds=1)
    asked: list[bool] = []

    def pause(paused: bool) -> None:
        asked.append(paused)
        if len(asked) == 1:
            raise OperationalError("the broker is unreachable")

    worker_id = f"{name}@host#b00t"
    publisher = CatalogPublisher(ctx.comfyui, ctx.events.redis, worker_id, ctx.templates.all, [], 2,
                                 state=state, on_pause=pause)
    fleet.set_drain(ctx.events.redis, fleet.node_of(worker_id), True)
    try:
        assert publisher.refresh(), "the catalog is still published"
        assert asked == [True] and not state.paused, "not drained yet"
        assert publisher.refresh()
        assert asked == [True, True] and state.paused, "asked again, and drained"
        logged = [(r.levelname, r.getMessage()) for r in caplog.records if "drain or resume" in r.getMessage()]
        assert [level for level, _ in logged] == ["WARNING", "INFO"], logged
        assert "the broker is unreachable" in logged[0][1]
    finally:
        fleet.set_drain(ctx.events.redis, fleet.node_of(worker_id), False)
        publisher.stop()


def test_the_heartbeat_thread_outlives_a_beat_that_fails_unexpectedly(ctx, unique):
    worker_id = f"hb-{unique}"
    publisher = CatalogPublisher(ctx.comfyui, ctx.events.redis, worker_id, ctx.templates.all, [], 2, interval=0.05)
    beats = []

    def failing_once() -> dict:
        beats.append(1)
        if len(beats) == 1:
            raise KeyError("a catalog this code did not expect")
        return ctx.templates.all()

    publisher.templates = failing_once
    publisher.start()
    try:
        deadline = time.monotonic() + 30
        while not ctx.events.redis.exists(alive_key(worker_id)) or len(beats) < 2:
            assert time.monotonic() < deadline, "the heartbeat stopped after the failing beat"
            time.sleep(0.05)
        assert publisher.is_alive()
    finally:
        publisher.stop()


def test_workers_of_one_name_on_two_hosts_are_listed_drained_and_resumed_apart(ctx, unique, render_settings,
                                                                               render_config, issue_token):
    """Hosts started from one compose file share the ``--name``; each worker is its node ``name@host``."""
    from services.render.app import create_app

    name = f"gpu-{unique}"
    paused: dict[str, list[bool]] = {"host-a": [], "host-b": []}
    states = {host: WorkerState(name, host, drain_seconds=1) for host in paused}
    publishers = {host: CatalogPublisher(ctx.comfyui, ctx.events.redis, f"{name}@{host}#boot", ctx.templates.all,
                                         [], 2, state=states[host], on_pause=paused[host].append)
                  for host in paused}
    app = create_app(render_settings, render_config)
    client = app.test_client()
    admin = {"Authorization": f"Bearer {issue_token(1, 'root', role='admin')}"}

    def beat() -> dict[str, dict]:
        for publisher in publishers.values():
            assert publisher.refresh()
        listed = client.get("/api/admin/workers", headers=admin).get_json()["data"]["items"]
        return {row["host"]: row for row in listed if row["name"] == name}

    try:
        rows = beat()
        assert set(rows) == {"host-a", "host-b"}, "both workers are listed"
        assert {host: row["node"] for host, row in rows.items()} == {"host-a": f"{name}@host-a",
                                                                      "host-b": f"{name}@host-b"}

        ambiguous = client.post(f"/api/admin/workers/{name}/drain", headers=admin)
        assert ambiguous.status_code == 409
        assert ambiguous.get_json()["error"]["code"] == "WORKER_AMBIGUOUS"
        assert ambiguous.get_json()["error"]["details"]["nodes"] == [f"{name}@host-a", f"{name}@host-b"]

        drained = client.post(f"/api/admin/workers/{name}@host-a/drain", headers=admin)
        assert drained.status_code == 200 and drained.get_json()["data"]["worker"]["node"] == f"{name}@host-a"
        rows = beat()
        assert paused == {"host-a": [True], "host-b": []}, "only the worker named is drained"
        assert (rows["host-a"]["state"], rows["host-a"]["drainRequested"]) == ("draining", True)
        assert (rows["host-b"]["state"], rows["host-b"]["drainRequested"]) == ("active", False)

        assert client.post(f"/api/admin/workers/{name}@host-a/resume", headers=admin).status_code == 200
        rows = beat()
        assert paused == {"host-a": [True, False], "host-b": []}
        assert {row["state"] for row in rows.values()} == {"active"}
    finally:
        for host, publisher in publishers.items():
            publisher.stop()
            fleet.set_drain(ctx.events.redis, f"{name}@{host}", False)
            ctx.events.redis.hdel(fleet.REGISTRY_KEY, f"{name}@{host}", name)
        app.extensions["render"].db.dispose()


def test_a_worker_whose_name_no_other_has_is_drained_by_its_name(ctx, unique, render_settings, render_config,
                                                                  issue_token):
    """The route's earlier form, ``/api/admin/workers/<--name>/drain``, still reaches a worker whose
    ``--name`` is unique in the fleet."""
    from services.render.app import create_app

    name = f"solo-{unique}"
    paused: list[bool] = []
    state = WorkerState(name, "host-a", drain_seconds=1)
    publisher = CatalogPublisher(ctx.comfyui, ctx.events.redis, f"{name}@host-a#boot", ctx.templates.all, [], 2,
                                 state=state, on_pause=paused.append)
    app = create_app(render_settings, render_config)
    admin = {"Authorization": f"Bearer {issue_token(1, 'root', role='admin')}"}
    try:
        assert publisher.refresh()
        answer = app.test_client().post(f"/api/admin/workers/{name}/drain", headers=admin)
        assert answer.status_code == 200 and answer.get_json()["data"]["worker"]["node"] == f"{name}@host-a"
        assert publisher.refresh() and paused == [True]
        assert app.test_client().post(f"/api/admin/workers/{name}/resume", headers=admin).status_code == 200
        assert publisher.refresh() and paused == [True, False]
        assert app.test_client().post(f"/api/admin/workers/nobody-{unique}/drain",
                                      headers=admin).get_json()["error"]["code"] == "WORKER_NOT_FOUND"
    finally:
        publisher.stop()
        fleet.set_drain(ctx.events.redis, f"{name}@host-a", False)
        ctx.events.redis.hdel(fleet.REGISTRY_KEY, f"{name}@host-a")
        app.extensions["render"].db.dispose()


def test_the_thumbnail_nodes_are_used_only_where_comfyuis_own_specs_take_what_the_worker_sends(ctx):
    info = ctx.comfyui.object_info_all()
    assert THUMBNAIL_NODE_CLASSES <= usable_node_classes(info) == set(info)

    other_choices = copy.deepcopy(info)
    other_choices["SaveAnimatedWEBP"]["input"]["required"]["method"] = [["default", "slowest"]]
    renamed = copy.deepcopy(info)
    scale = renamed["ImageScaleToMaxDimension"]["input"]["required"]
    scale["longest_side"] = scale.pop("largest_size")
    for changed in (other_choices, renamed):
        assert usable_node_classes(changed) == set(info) - THUMBNAIL_NODE_CLASSES, "another version's nodes"
