"""The worker's heartbeat tells the scheduler when the fleet changed, so a worker that joins,
drains or loses its ComfyUI is planned with on the scheduler's next pass."""
from __future__ import annotations

import time

from kombu.exceptions import OperationalError

from services.render import fleet
from services.render.catalog import alive_key
from services.render.scheduler import FairQueue
from services.render_worker.comfyui import ComfyUIClient
from services.render_worker.drain import WorkerState
from services.render_worker.heartbeat import CatalogPublisher


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


def test_a_drain_the_broker_cannot_carry_is_asked_again_and_the_beat_goes_on(ctx, unique):
    name = f"hb-{unique}"
    state = WorkerState(name, "host", drain_seconds=1)
    asked: list[bool] = []

    def pause(paused: bool) -> None:
        asked.append(paused)
        if len(asked) == 1:
            raise OperationalError("the broker is unreachable")

    publisher = CatalogPublisher(ctx.comfyui, ctx.events.redis, name, ctx.templates.all, [], 2,
                                 state=state, on_pause=pause)
    fleet.set_drain(ctx.events.redis, name, True)
    try:
        assert publisher.refresh(), "the catalog is still published"
        assert asked == [True] and not state.paused, "not drained yet"
        assert publisher.refresh()
        assert asked == [True, True] and state.paused, "asked again, and drained"
    finally:
        fleet.set_drain(ctx.events.redis, name, False)
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
