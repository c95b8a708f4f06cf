"""The gateway's one subscriber per process: sockets that come and go while its listener waits."""
from __future__ import annotations

import contextlib
import json
import time

import redis

from services.gateway.fanout import EVENT, EVENTS_DOWN, HEALTH_CHECK_SECONDS, WAKE, Fanout, Mailbox
from shared.events import EventBus, redis_client

DEADLINE = 30.0


def _next_event(mailbox: Mailbox) -> dict:
    item = mailbox.get(DEADLINE)
    assert item is not None and item[0] == EVENT, item
    return json.loads(item[1])


def _wait(condition) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_sockets_joining_an_idle_listener_wake_it_and_hear_their_events(redis_url, unique):
    fanout = Fanout(redis_url)
    bus = EventBus(redis_client(redis_url))
    alice, bob = (int(unique, 16) % 1_000_000) * 2, (int(unique, 16) % 1_000_000) * 2 + 1
    watcher = redis.Redis.from_url(redis_url, decode_responses=True).pubsub()
    try:
        first = Mailbox(10)
        first_id = fanout.attach(alice, first, DEADLINE)
        watcher.subscribe(fanout.control_channel)
        assert watcher.get_message(timeout=DEADLINE)["type"] == "subscribe"

        second = Mailbox(10)
        second_id = fanout.attach(bob, second, DEADLINE)  # the listener is waiting on Redis meanwhile
        wake = watcher.get_message(timeout=DEADLINE)
        assert (wake["type"], wake["data"]) == ("message", WAKE), "the joining socket woke the listener"

        bus.publish(bob, "credits.changed", {"available": 7})
        bus.publish(alice, "credits.changed", {"available": 3})
        assert _next_event(second)["data"] == {"available": 7}
        assert _next_event(first)["data"] == {"available": 3}

        fanout.detach(bob, second_id, second)
        fanout.detach(alice, first_id, first)
        _wait(lambda: fanout._listener is None)  # the last socket gone, the listener ends
        bus.publish(alice, "credits.changed", {"available": 1})
        assert first.get(0.2) is None and second.get(0) is None
    finally:
        watcher.close()
        fanout.close()


def test_a_lost_subscription_tells_every_socket_and_the_next_socket_subscribes_again(redis_url, unique):
    fanout = Fanout(redis_url)
    bus = EventBus(redis_client(redis_url))
    user = (int(unique, 16) % 1_000_000) * 2
    try:
        first = Mailbox(10)
        fanout.attach(user, first, DEADLINE)
        killed = bus.redis.client_kill_filter(_type="pubsub", skipme=True,
                                              addr=_subscriber_address(bus.redis, fanout))
        assert killed == 1
        assert first.get(DEADLINE) == (EVENTS_DOWN, None)

        second = Mailbox(10)
        fanout.attach(user, second, DEADLINE)  # a new listener, a new connection
        bus.publish(user, "credits.changed", {"available": 2})
        assert _next_event(second)["data"] == {"available": 2}
    finally:
        fanout.close()


def _subscriber_address(client: redis.Redis, fanout: Fanout) -> str:
    name = f"gateway-fanout-{fanout.process_id}"
    (subscriber,) = [c for c in client.client_list(_type="pubsub") if c["name"] == name]
    return subscriber["addr"]


def test_a_wake_redis_refused_does_not_keep_the_next_socket_waiting(redis_url, unique, monkeypatch):
    """The listener sleeps until a message or its health check (30 s): a socket whose wake could
    not be published must not stop the next socket from waking it."""
    fanout = Fanout(redis_url)
    bus = EventBus(redis_client(redis_url))
    alice, bob, carol = ((int(unique, 16) % 1_000_000) * 3 + offset for offset in range(3))
    try:
        fanout.attach(alice, Mailbox(10), DEADLINE)
        time.sleep(0.2)  # the listener back to waiting on Redis
        with monkeypatch.context() as patched:
            patched.setattr(fanout.redis, "publish", _refuse)
            with contextlib.suppress(redis.ConnectionError):  # refused, unless it met the listener awake
                fanout.attach(bob, Mailbox(10), 0.5)
        third = Mailbox(10)
        fanout.attach(carol, third, HEALTH_CHECK_SECONDS / 3)  # woken, not found by the health check
        bus.publish(carol, "credits.changed", {"available": 5})
        assert _next_event(third)["data"] == {"available": 5}
    finally:
        fanout.close()


def _refuse(*_args, **_kwargs):
    raise redis.ConnectionError("Redis refused the publish")
