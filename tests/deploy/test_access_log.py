"""The access log line of every HTTP process (deploy/access_log.py): the same
text as gunicorn's own logger writes, for the platform's format and for an operator's."""
from __future__ import annotations

import io
import logging
from datetime import timedelta

import pytest
from gunicorn import glogging
from gunicorn.config import Config

from deploy.access_log import AccessLog
from shared.web import ACCESS_LOG_FORMAT


class Response:
    def __init__(self, status: str, sent: int | None, headers: list[tuple[str, str]]) -> None:
        self.status, self.sent, self.headers = status, sent, headers


class Request:
    headers = [("HOST", "example.test"), ("USER-AGENT", "curl/8"), ("X-FORWARDED-FOR", "203.0.113.9")]


def environ(**extra: str) -> dict[str, object]:
    return {"REQUEST_METHOD": "GET", "RAW_URI": "/api/gallery?sort=hot&page=2", "PATH_INFO": "/api/gallery",
            "QUERY_STRING": "sort=hot&page=2", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.0.0.7",
            "HTTP_HOST": "example.test", "wsgi.url_scheme": "http", **extra}


def line(logger_class: type[glogging.Logger], access_format: str, response: Response, env: dict) -> str:
    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set("access_log_format", access_format)
    logger = logger_class(cfg)
    stream = io.StringIO()
    for handler in logger.access_log.handlers:
        if type(handler) is logging.StreamHandler:  # gunicorn's own for "-" (not pytest's capture)
            handler.setStream(stream)
    logger.access(response, Request(), env, timedelta(seconds=1, microseconds=234_567))
    return stream.getvalue()


CASES = [
    (Response("200 OK", 1532, [("Content-Type", "application/json"), ("X-Request-ID", "4f1c2a")]),
     environ(HTTP_USER_AGENT="Mozilla/5.0 (X11)")),
    (Response("404 NOT FOUND", 0, [("Content-Type", "application/json")]), environ()),  # no agent, no request id
    (Response("101 Switching Protocols", None, [("x-request-id", "ws-9")]), environ(HTTP_USER_AGENT="ws")),
]


@pytest.mark.parametrize("response, env", CASES)
def test_the_platform_line_is_gunicorns_line(response, env):
    ours = line(AccessLog, ACCESS_LOG_FORMAT, response, env)
    assert ours == line(glogging.Logger, ACCESS_LOG_FORMAT, response, env)
    assert ours.startswith('10.0.0.7 "GET /api/gallery?sort=hot&page=2 HTTP/1.1" ') and "1234ms" in ours


@pytest.mark.parametrize("response, env", CASES)
def test_an_operators_own_format_gets_gunicorns_fields(response, env, monkeypatch):
    # %(t)s is the time of writing to the second: both lines must be written in the same one.
    monkeypatch.setattr(glogging.Logger, "now", lambda self: "[07/Dec/2026:00:47:03 +0000]")
    access_format = '%(t)s %(h)s %(U)s?%(q)s %(s)s %({host}i)s %({content-type}o)s %(D)sus'
    ours = line(AccessLog, access_format, response, env)
    assert ours == line(glogging.Logger, access_format, response, env)
    assert ours.startswith("[07/Dec/2026:00:47:03 +0000] 10.0.0.7 ")
    assert "example.test" in ours and "1234567us" in ours


def test_no_line_when_the_access_log_is_off():
    cfg = Config()
    logger = AccessLog(cfg)
    logger.access(*CASES[0][:1], Request(), CASES[0][1], timedelta(0))  # nothing configured, nothing raised
    assert not logger.access_log_enabled
