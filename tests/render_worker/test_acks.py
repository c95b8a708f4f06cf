"""A task's acknowledgement that the broker connection could not carry (it ended while the
connection was down, the broker puts the message back) is logged as a warning, not as critical;
a broker away for less than a minute is warned of, not logged as an error."""
from __future__ import annotations

import importlib
import logging
from types import SimpleNamespace

from amqp.exceptions import RecoverableConnectionError
from celery.worker import loops, request
from celery.worker.consumer import connection, consumer
from kombu import Message


def test_an_ack_lost_with_the_connection_is_a_warning_without_a_traceback(caplog):
    importlib.import_module("services.render_worker.worker")  # the worker's start-up: its logging filter

    def basic_ack(*_args, **_kwargs):  # the channel of a connection that closed meanwhile
        raise RecoverableConnectionError("connection already closed")

    message = Message(channel=SimpleNamespace(no_ack_consumers=None, basic_ack=basic_ack), delivery_tag=7, body=b"{}")
    with caplog.at_level(logging.INFO):
        message.ack_log_error(request.logger, (RecoverableConnectionError,))  # as Request.acknowledge calls it

    [record] = [r for r in caplog.records if str(r.msg).startswith("Couldn't ack")]
    assert (record.levelname, record.exc_info) == ("WARNING", None)
    assert "connection already closed" in record.getMessage()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _cannot_connect(reason: str) -> None:
    """What Celery's consumer logs when a connection to the broker fails (before it connected, and on each retry)."""
    step = SimpleNamespace(conninfo=SimpleNamespace(as_uri=lambda: "amqp://guest:**@broker:5672//"))
    consumer.Consumer.on_connection_error_before_connected(step, ConnectionRefusedError(reason))


def _connected() -> None:
    connection.Connection.start(SimpleNamespace(), SimpleNamespace(connect=lambda: SimpleNamespace(
        as_uri=lambda: "amqp://guest:**@broker:5672//")))


def _teardown_failed() -> None:
    """What Celery's event loop logs when the dead connection's teardown fails too."""
    try:
        raise RecoverableConnectionError("Socket was disconnected")
    except RecoverableConnectionError as exc:
        loops.logger.exception("Error cleaning up after event loop: %r", exc)


def test_a_broker_away_for_less_than_a_minute_is_warned_of_then_an_error_until_it_is_back(caplog, monkeypatch):
    """A broker restart is routine (the worker serves on), so its lines must not page anyone; a broker
    away for longer than a minute must."""
    worker = importlib.import_module("services.render_worker.worker")
    clock = Clock()
    monkeypatch.setattr(worker._broker_away, "clock", clock)
    monkeypatch.setattr(worker._broker_away, "since", None)

    def levels() -> list[tuple[str, str, bool]]:
        seen = [(r.levelname, r.getMessage().split(":")[0], r.exc_info is not None) for r in caplog.records]
        caplog.clear()
        return seen

    with caplog.at_level(logging.INFO):
        _teardown_failed()
        _cannot_connect("Connection refused")
        clock.now += 59
        _cannot_connect("Connection refused")
        assert levels() == [("WARNING", "Error cleaning up after event loop", False),
                            ("WARNING", "consumer", False), ("WARNING", "consumer", False)]
        clock.now += 2  # a minute and more without the broker
        _cannot_connect("Connection refused")
        _teardown_failed()
        assert levels() == [("ERROR", "consumer", False), ("ERROR", "Error cleaning up after event loop", True)]
        _connected()
        clock.now += 3600
        _cannot_connect("Connection reset by peer")  # a new outage
        assert "Connection reset by peer" in caplog.records[-1].getMessage()
        assert levels() == [("INFO", "Connected to amqp", False), ("WARNING", "consumer", False)]


def test_other_errors_of_the_event_loop_stay_errors(caplog):
    importlib.import_module("services.render_worker.worker")
    with caplog.at_level(logging.INFO):
        try:
            raise KeyError("a bug, not the broker")
        except KeyError as exc:
            loops.logger.exception("Error cleaning up after event loop: %r", exc)
    [record] = caplog.records
    assert (record.levelname, record.exc_info is not None) == ("ERROR", True)
