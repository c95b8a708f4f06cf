"""The hold sweeper process, ``python -m services.credits.sweeper``: releases expired holds
of finished or vanished jobs (``services.credits.expiry``) every
``CREDITS_SWEEP_INTERVAL_SECONDS``. One process per deployment is enough; two do no harm."""
from __future__ import annotations

import logging
import threading

from flask import Flask

from services.credits.app import create_app
from services.credits.expiry import sweep_holds
from services.credits.service import CreditsService
from services.render.client import RenderClient

log = logging.getLogger(__name__)


def run_sweeper(app: Flask, interval: float, stop: threading.Event | None = None) -> None:
    """Sweep every ``interval`` seconds until ``stop`` is set.

    A failing pass is logged and the next one runs on time: the sweep is idempotent and a
    missed pass only delays a refund.
    """
    stop = stop or threading.Event()
    credits: CreditsService = app.extensions["credits"]
    settings = app.config["SETTINGS"]
    jobs = RenderClient(settings.render_url, settings.service_token)
    try:
        while not stop.is_set():
            try:
                report = sweep_holds(credits, jobs.job_status)
                if report.released or report.unreachable:
                    log.info("hold sweep: %s", report.summary())
            except Exception:  # a background loop must outlive one bad pass (e.g. the database restarting)
                log.exception("hold sweep failed; retrying in %s s", interval)
            stop.wait(interval)
    finally:
        jobs.close()


def main() -> None:
    app = create_app()
    run_sweeper(app, app.extensions["credits"].config.sweep_interval_seconds)


if __name__ == "__main__":
    main()
