"""A background loop logs a dependency's restart as one warning, an outage of more than a minute as
an error (once a minute), its end as information, and anything else as an error at once."""
from __future__ import annotations

import errno
import logging
import socket
import threading
import time

import pytest
import redis
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError

from shared.events import GroupConsumer, redis_client
from shared.outage import Outage, lost_connection

log = logging.getLogger("tests.outage")


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def _logged(caplog) -> list[tuple[str, str, bool]]:
    seen = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records if r.name == log.name]
    caplog.clear()
    return seen


def test_an_outage_is_a_warning_then_an_error_each_minute_then_its_end(caplog):
    clock = Clock()
    outage = Outage(log, "nightly pass", clock)
    caplog.set_level(logging.INFO)
    refused = ConnectionRefusedError(111, "Connection refused")
    outage.failed(refused, "retrying in 2 s")
    for _ in range(29):  # every 2 s for the rest of the minute
        clock.now += 2
        outage.failed(refused, "retrying in 2 s")
    assert _logged(caplog) == [
        ("WARNING", "nightly pass failed (ConnectionRefusedError: [Errno 111] Connection refused); retrying in 2 s",
         False)]
    clock.now += 2  # a minute since it began
    outage.failed(refused, "retrying in 2 s")
    clock.now += 30
    outage.failed(refused, "retrying in 2 s")
    clock.now += 30  # a minute since the error
    outage.failed(refused, "retrying in 2 s")
    assert _logged(caplog) == [("ERROR", "nightly pass has failed for 60 s; retrying in 2 s", True),
                               ("ERROR", "nightly pass has failed for 120 s; retrying in 2 s", True)]
    clock.now += 5
    outage.passed()
    outage.passed()
    assert _logged(caplog) == [("INFO", "nightly pass works again after 125 s", False)]
    outage.failed(OperationalError("SELECT 1", {}, Exception("(2003) Can't connect to MySQL server")))
    assert [level for level, _, _ in _logged(caplog)] == ["WARNING"]  # a new outage: the database's


@pytest.mark.parametrize("exc, lost", [
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), True),
    (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), True),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), True),  # a restarting service's name
    (OSError(errno.EHOSTUNREACH, "No route to host"), True),
    (OSError("Server unexpectedly closed connection"), True),  # py-amqp's, without an errno
    (redis.ConnectionError("Error 111 connecting to redis:6379"), True),
    (BrokerError("[Errno 111] Connection refused"), True),
    (OperationalError("SELECT 1", {}, Exception("(2013) Lost connection to server during query")), True),
    (OSError(errno.ENOSPC, "No space left on device"), False),
    (FileNotFoundError(errno.ENOENT, "No such file or directory"), False),
    (redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'"), False),
    (KeyError("workerId"), False),
])
def test_what_counts_as_a_lost_connection(exc, lost):
    assert lost_connection(exc) is lost


def test_a_failure_that_is_not_a_lost_connection_is_an_error_every_time(caplog):
    outage = Outage(log, "nightly pass", Clock())
    caplog.set_level(logging.INFO)
    for _ in range(2):
        try:
            {}["missing"]
        except KeyError as exc:
            outage.failed(exc)
    outage.passed()  # no outage began: nothing to end
    assert _logged(caplog) == [("ERROR", "nightly pass failed; retrying", True)] * 2


def test_a_consumer_whose_redis_is_away_warns_once_and_says_when_it_is_back(redis_url, unique, caplog):
    """A real loop: ``GroupConsumer.run`` against a port nothing listens on, retried every 50 ms,
    then given the real Redis."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    stream = f"test:stream:{unique}"
    seen = threading.Event()
    consumer = GroupConsumer(redis_client(f"redis://127.0.0.1:{dead_port}/0"), "g", "away",
                             lambda fields: seen.set(), stream)
    caplog.set_level(logging.INFO, logger="shared.events")
    stop = threading.Event()
    runner = threading.Thread(target=consumer.run, args=(stop, 0.05), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not [r for r in caplog.records if r.name == "shared.events"]:
            time.sleep(0.05)
        time.sleep(0.5)  # several retries more
        away = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "shared.events"]
        consumer.client = redis_client(redis_url)
        consumer.client.xadd(stream, {"n": "1"})
        assert seen.wait(30), "the consumer never read the stream once Redis was back"
    finally:
        stop.set()
        runner.join(30)
    assert len(away) == 1 and away[0][0] == "WARNING" and "ConnectionError" in away[0][1], away
    back = [r.getMessage() for r in caplog.records if r.name == "shared.events" and r.levelname == "INFO"]
    assert any(message.startswith(f"g/away consuming {stream} works again after") for message in back), back
