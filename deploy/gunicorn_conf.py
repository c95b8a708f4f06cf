"""gunicorn settings every HTTP process of the table shares (``--config python:deploy.gunicorn_conf``):
multi-process Prometheus metrics, and an access log line that costs a third of gunicorn's own
(``deploy/access_log.py``).

Each gunicorn worker writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR`` and
``/metrics`` (``shared/metrics.py``) adds them up, whichever worker answers the scrape. The
folder is this server's own: a fresh temporary one unless the environment names one, emptied
at start (files of a previous run would count twice), and a dead worker's live gauges are
dropped when it exits.
"""
from __future__ import annotations

import os
import shutil
import tempfile

from deploy.access_log import AccessLog

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


logger_class = AccessLog
