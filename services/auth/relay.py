"""The outbox relay process, ``python -m services.auth.relay``: sends the announcements
``services.auth.outbox`` holds (those Redis did not take when they were made) every
``AUTH_OUTBOX_INTERVAL_SECONDS``. One per deployment is enough; two only send twice,
which the consumers ignore."""
from __future__ import annotations

import logging
import threading

from flask import Flask

from services.auth.app import create_app
from services.auth.outbox import Outbox
from shared.metrics import serve_metrics
from shared.outage import Outage

log = logging.getLogger(__name__)


def run_relay(app: Flask, interval: float, stop: threading.Event | None = None) -> None:
    """Relay the outbox every ``interval`` seconds until ``stop`` is set; a failing pass is
    logged and retried on the next one."""
    stop = stop or threading.Event()
    outbox: Outbox = app.extensions["auth_outbox"]
    outage = Outage(log, "outbox relay")
    while not stop.is_set():
        try:
            if sent := outbox.relay():
                log.info("relayed %s announcement(s) from the outbox", sent)
        except Exception as exc:  # a background loop must outlive an outage of Redis or the database
            outage.failed(exc, f"retrying in {interval} s")
        else:
            outage.passed()
        stop.wait(interval)


def main() -> None:
    app = create_app()
    serve_metrics("auth-outbox")
    try:
        run_relay(app, app.extensions["auth"].config.outbox_interval_seconds)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
