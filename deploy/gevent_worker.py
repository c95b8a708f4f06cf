"""The gateway's gunicorn worker: gevent's own HTTP/1.1 server (``gevent.pywsgi``) in each worker.

gunicorn's ``gevent`` worker parses requests, builds the environ and writes answers in its own
pure-Python code, which cost about as much CPU per proxied GET as the gateway's own code
(docs/benchmarks.md, "gunicorn's gevent worker or gevent's server"). gunicorn's
``gevent_pywsgi`` worker serves with ``gevent.pywsgi`` instead; this subclass keeps what the
gateway relied on from gunicorn's worker:

- ``gunicorn.socket`` in the environ, so flask-sock's WebSocket takes the connection over as it
  does under gunicorn (it then raises ``StopIteration``: the connection is closed, no answer
  written);
- ``--keep-alive``: an idle connection, or a request head that does not arrive, is closed after
  that many seconds (0: one request per connection);
- the access line with the body's bytes and the answer's headers (``deploy/access_log.py``).
"""
from __future__ import annotations

import datetime as dt
import socket
from typing import Sequence

from gunicorn.workers.ggevent import GeventPyWSGIWorker, GeventResponse, PyWSGIHandler


class Handler(PyWSGIHandler):
    keepalive: float = 0  # set per worker from gunicorn's --keep-alive
    taken_over = False  # a WebSocket has taken the connection
    head_length = 0
    str_headers: Sequence[tuple[str, str]] = ()  # the application's, for the access line

    def read_requestline(self) -> str:
        self.socket.settimeout(self.keepalive or None)
        return super().read_requestline()

    def read_request(self, raw_requestline: str) -> bool:
        parsed = super().read_request(raw_requestline)
        self.socket.settimeout(None)  # the application's own reads and writes wait as long as they must
        if not self.keepalive:
            self.close_connection = True
        return parsed

    def _handle_client_error(self, ex: Exception) -> tuple[str, bytes] | None:
        if isinstance(ex, socket.timeout):  # the head did not arrive within --keep-alive: close quietly
            return None
        return super()._handle_client_error(ex)

    def get_environ(self) -> dict:
        environ = super().get_environ()
        environ["gunicorn.socket"] = self.socket
        return environ

    def run_application(self) -> None:
        try:
            super().run_application()
        except StopIteration:  # flask-sock after a WebSocket: the connection was the socket's
            self.taken_over = True
            self.close_connection = True

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info=None):
        self.str_headers = headers
        return super().start_response(status, headers, exc_info)

    def _write_with_headers(self, data: bytes) -> None:
        super()._write_with_headers(data)
        self.head_length = self.response_length - len(data)  # gevent counts the head as sent bytes

    def log_request(self) -> None:
        if self.taken_over or self.environ is None:
            return  # as under gunicorn's gevent worker: no line for a WebSocket or a request never read
        status = self.status.decode("latin-1") if isinstance(self.status, bytes) else self.status
        sent = self.response_length - self.head_length if self.headers_sent else self.response_length
        took = dt.timedelta(seconds=(self.time_finish or self.time_start) - self.time_start)
        self.server.log.access(GeventResponse(status, self.str_headers, sent), None, self.environ, took)


class GeventServerWorker(GeventPyWSGIWorker):
    """``--worker-class deploy.gevent_worker.GeventServerWorker``; gevent's server builds the handler
    from its class, so this worker's --keep-alive goes into a class of its own."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.wsgi_handler = type("Handler", (Handler,), {"keepalive": self.cfg.keepalive})
