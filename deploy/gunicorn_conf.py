"""gunicorn settings every HTTP process of the table shares (``--config python:deploy.gunicorn_conf``):
multi-process Prometheus metrics, and an access log line that costs a third of gunicorn's own.

Each gunicorn worker writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR`` and
``/metrics`` (``shared/metrics.py``) adds them up, whichever worker answers the scrape. The
folder is this server's own: a fresh temporary one unless the environment names one, emptied
at start (files of a previous run would count twice), and a dead worker's live gauges are
dropped when it exits.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile

from gunicorn import glogging

# Named here, not imported: prometheus_client picks its storage when first imported, so the
# folder must be set before anything imports it (workers fork from this process).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_OWN_FOLDER = MULTIPROC_ENV not in os.environ
os.environ.setdefault(MULTIPROC_ENV, tempfile.mkdtemp(prefix="aigc-metrics-"))

# gunicorn's control socket (for ``gunicornc``) is at one path per user, ~/.gunicorn/gunicorn.ctl:
# the platform's servers on one host (``make run``, a GPU host's compose) would take it from one
# another and remove it for one another on exit. They are run by the supervisor or the orchestrator.
control_socket_disable = True


def on_starting(server) -> None:
    folder = os.environ[MULTIPROC_ENV]
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    if _OWN_FOLDER:
        shutil.rmtree(os.environ[MULTIPROC_ENV], ignore_errors=True)


_FIELD = re.compile(r"%\(([^)]*)\)s")
_REQUEST_FIELDS = frozenset("hrsbMa")


class AccessLog(glogging.Logger):
    """gunicorn's logger, building only the fields the access format names.

    For every line, gunicorn's own ``atoms`` turns each request header, response header and
    environ entry into a field (about sixty) and wraps them in a case-insensitive mapping that
    logging then reads field by field: about 65 µs of a request that costs the gateway ~400.
    The platform's format (``shared.web.ACCESS_LOG_FORMAT``) names seven: the client, the request
    line, the status, the bytes sent, the milliseconds, the user agent and a response header.
    These are built here, with the same text as gunicorn's; a format that names any other field
    (an operator's own) gets gunicorn's line."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        fields = set(_FIELD.findall(cfg.access_log_format))
        headers = {name for name in fields if name.startswith("{") and name.endswith("}o")}
        self._lean = fields - headers <= _REQUEST_FIELDS
        self._response_headers = {name[1:-2].lower(): name for name in headers}

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_enabled:
            return
        if not self._lean:
            super().access(resp, req, environ, request_time)
            return
        status = resp.status
        sent = getattr(resp, "sent", None)
        fields = {"h": environ.get("REMOTE_ADDR", "-"),
                  "r": f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}",
                  "s": status.split(None, 1)[0] if isinstance(status, str) else status,
                  "b": str(sent) if sent is not None else "-",
                  "M": request_time.seconds * 1000 + int(request_time.microseconds / 1000),
                  "a": environ.get("HTTP_USER_AGENT", "-")}
        fields.update(dict.fromkeys(self._response_headers.values(), "-"))
        for name, value in resp.headers:
            field = self._response_headers.get(name.lower())
            if field is not None:
                fields[field] = value
        try:
            self.access_log.info(self.cfg.access_log_format, fields)
        except Exception:
            self.exception("access log line not written")


logger_class = AccessLog
