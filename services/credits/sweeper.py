"""The hold sweeper process, ``python -m services.credits.sweeper``: releases expired holds
of finished or vanished jobs (``services.credits.expiry``) every
``CREDITS_SWEEP_INTERVAL_SECONDS``. One process per deployment is enough; two do no harm."""
from __future__ import annotations

import logging
import threading

from flask import Flask
from sqlalchemy import func, select

from services.credits.app import create_app
from services.credits.expiry import sweep_holds
from services.credits.models import CreditHold
from services.credits.service import CreditsService
from services.render.client import RenderClient
from shared.metrics import GaugeCollector, register_collector, serve_metrics
from shared.outage import Outage

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
    outage = Outage(log, "hold sweep")
    try:
        while not stop.is_set():
            try:
                report = sweep_holds(credits, jobs.job_status)
                if report.released or report.unreachable:
                    log.info("hold sweep: %s", report.summary())
            except Exception as exc:  # a background loop must outlive one bad pass (e.g. the database restarting)
                outage.failed(exc, f"retrying in {interval} s")
            else:
                outage.passed()
            stop.wait(interval)
    finally:
        jobs.close()


def held_credits(app: Flask) -> list[tuple[tuple[str, ...], float]]:
    """Credits held by open holds (not yet captured or released), read at scrape time."""
    with app.extensions["db"].read() as session:
        held = session.scalar(select(func.coalesce(func.sum(CreditHold.amount - CreditHold.captured
                                                            - CreditHold.released), 0))
                              .where(CreditHold.status == "open"))
    return [((), float(held or 0))]


def main() -> None:
    app = create_app()
    register_collector(GaugeCollector("credits_held", "Credits held by open holds (not captured or released yet)",
                                      (), lambda: held_credits(app)))
    serve_metrics("credits-sweeper")
    run_sweeper(app, app.extensions["credits"].config.sweep_interval_seconds)


if __name__ == "__main__":
    main()
