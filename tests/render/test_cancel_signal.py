"""The cancel signal as a worker process reads it: the jobs it runs, read together."""
from __future__ import annotations

import time

import pytest
import redis as redis_lib

from services.render import cancel_signal


class Counting:
    """A client that counts the reads of the signals."""

    def __init__(self, client):
        self.client, self.reads = client, 0

    def mget(self, keys):
        self.reads += 1
        return self.client.mget(keys)


def test_the_jobs_a_worker_runs_are_read_together_and_a_signal_is_seen_within_the_interval(redis, unique):
    client = Counting(redis)
    watch = cancel_signal.Watch(client, interval=0.2)
    first, second = f"first-{unique}", f"second-{unique}"
    with watch.watching(first), watch.watching(second):
        assert not watch.received(first) and not watch.received(second)
        assert client.reads == 1, "one read for both jobs"
        cancel_signal.send(redis, second)
        deadline = time.monotonic() + 10
        while not watch.received(second):
            assert time.monotonic() < deadline, "the signal is seen at the next read"
            time.sleep(0.05)
        assert not watch.received(first), "only the job cancelled"
    reads = client.reads
    with watch.watching(first):
        time.sleep(0.25)
        assert not watch.received(first)
    assert client.reads == reads + 1
    assert watch._jobs == set(), "a job is read only while it runs here"


def test_redis_away_is_reported_once_an_interval(unique):
    watch = cancel_signal.Watch(redis_lib.Redis(port=1, socket_connect_timeout=0.2, retry=None), interval=30)
    with watch.watching(unique):
        with pytest.raises(redis_lib.RedisError):
            watch.received(unique)  # the worker then reads the row
        assert watch.received(unique) is False, "not asked again before the interval: the row was read"
