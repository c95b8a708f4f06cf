"""A task's acknowledgement that the broker connection could not carry (it ended while the
connection was down, the broker puts the message back) is logged as a warning, not as critical."""
from __future__ import annotations

import importlib
import logging
from types import SimpleNamespace

from amqp.exceptions import RecoverableConnectionError
from celery.worker import request
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
