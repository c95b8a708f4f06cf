"""The webhook dispatcher process: ``python -m services.integrations.webhooks``.

One thread reads job outcomes and ``credits.low`` from ``platform:events`` (consumer group
``integrations-webhooks``) and records a delivery for each subscribed endpoint; the main
loop sends the deliveries that are due, a few at a time, and records each attempt
(``services.integrations.deliveries``). Run one or more; they share the work.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

from shared.config import Settings, load_settings
from shared.db import Database
from shared.events import GroupConsumer, redis_client
from shared.metrics import serve_metrics
from shared.outage import Outage
from shared.storage import make_storage
from shared.web import configure_logging
from services.integrations.config import IntegrationsConfig, load_config
from services.integrations.deliveries import Deliveries
from services.integrations.outcomes import JobOutcomes
from services.integrations.signing import SigningKeys
from services.render.client import RenderClient

log = logging.getLogger(__name__)

GROUP = "integrations-webhooks"
POLL_SECONDS = 0.5
SENDERS = 8  # deliveries attempted at once: one slow endpoint does not hold up the others


class WebhookDispatcher:
    def __init__(self, settings: Settings, config: IntegrationsConfig) -> None:
        self.db = Database(settings.integrations_database_url)
        self.redis = redis_client(settings.redis_url)
        self.render = RenderClient(settings.render_url, settings.service_token, timeout=(2.0, 10.0))
        outcomes = JobOutcomes(self.render, make_storage(settings), config.public_url)
        self.deliveries = Deliveries(self.db, config, SigningKeys(config.secret), outcomes)
        self.consumer = GroupConsumer(self.redis, GROUP, f"{socket.gethostname()}-{os.getpid()}",
                                      self.deliveries.record)
        self.stop_event = threading.Event()

    def deliver_due(self, pool: ThreadPoolExecutor) -> int:
        """Attempt every delivery that is due now; returns how many were attempted."""
        leased = self.deliveries.lease_due(limit=SENDERS * 4)
        list(pool.map(self.deliveries.attempt, leased))
        return len(leased)

    def run(self) -> None:
        reader = threading.Thread(target=self.consumer.run, args=(self.stop_event,), name="webhook-events",
                                  daemon=True)
        reader.start()
        outage = Outage(log, "webhook deliveries")
        with ThreadPoolExecutor(max_workers=SENDERS, thread_name_prefix="webhook-send") as pool:
            while not self.stop_event.is_set():
                try:
                    delivered = self.deliver_due(pool)
                except Exception as exc:  # a dispatcher must outlive a database outage; leases expire and are retried
                    outage.failed(exc, "retrying in 5 s")
                    self.stop_event.wait(5.0)
                    continue
                outage.passed()
                if not delivered:
                    self.stop_event.wait(POLL_SECONDS)
        reader.join(timeout=10)
        self.close()

    def close(self) -> None:
        self.deliveries.close()
        self.render.close()
        self.redis.close()
        self.db.dispose()


def main() -> None:
    settings = load_settings()
    configure_logging("integrations-webhooks", settings.log_level)
    serve_metrics("webhooks")
    dispatcher = WebhookDispatcher(settings, load_config(settings))
    signal.signal(signal.SIGTERM, lambda *_: dispatcher.stop_event.set())
    log.info("webhook dispatcher started")
    try:
        dispatcher.run()
    except KeyboardInterrupt:
        dispatcher.stop_event.set()


if __name__ == "__main__":
    main()
