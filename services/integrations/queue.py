"""The queue bridge process: ``python -m services.integrations.queue``.

Render requests arrive on each service account's request queue of the broker
(``BROKER_URL``: Redis or RabbitMQ), are admitted through the render API on the account's
behalf, and are answered on its reply queue (``docs/queue-api.md``). Run one or more; they
share the work (each message is taken by one, the outcome stream is read through one
consumer group). Stops on Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import logging
import signal
import threading

from shared.config import Settings, load_settings
from shared.db import Database
from shared.events import redis_client
from shared.metrics import serve_metrics
from shared.storage import make_storage
from shared.web import configure_logging
from services.integrations.bridge import AccountDirectory, Admissions, FlowControl, OutcomeRelay, ProgressRelay
from services.integrations.broker import Broker
from services.integrations.config import IntegrationsConfig, load_config
from services.integrations.contract import QueueNames
from services.integrations.outcomes import JobOutcomes
from services.integrations.request_log import RequestLog
from services.integrations.signing import SigningKeys
from services.render.client import RenderClient

log = logging.getLogger(__name__)


class QueueBridge:
    def __init__(self, settings: Settings, config: IntegrationsConfig) -> None:
        self.config = config
        self.db = Database(settings.integrations_database_url)
        self.redis = redis_client(settings.redis_url)
        self.names = QueueNames(config.queue_prefix)
        self.broker = Broker(settings.broker_url, self.names)
        self.render = RenderClient(settings.render_url, settings.service_token, timeout=(2.0, 15.0))
        requests = RequestLog(self.db)
        directory = AccountDirectory(self.db, SigningKeys(config.secret))
        flow = FlowControl()
        self.progress = ProgressRelay(self.redis, directory, self.broker, requests)
        self.admissions = Admissions(directory, self.names, self.broker, requests, self.render, flow, self.progress,
                                     config.max_message_bytes)
        self.outcomes = OutcomeRelay(directory, self.broker, requests, self.render,
                                     JobOutcomes(self.render, make_storage(settings), config.public_url), flow,
                                     self.progress)
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        self.progress.start()
        consumer = self.outcomes.consumer(self.redis)
        self.threads = [threading.Thread(target=consumer.run, args=(self.stop_event,), name="queue-outcomes",
                                         daemon=True)]
        self.threads += [threading.Thread(target=self.admissions.run, args=(self.stop_event,),
                                          name=f"queue-admissions-{index}", daemon=True)
                         for index in range(self.config.queue_threads)]
        for thread in self.threads:
            thread.start()
        log.info("queue bridge on %s: %s admission threads, prefix %r", self.broker.url.split("@")[-1],
                 self.config.queue_threads, self.names.prefix)

    def stop(self) -> None:
        self.stop_event.set()
        self.progress.stop_event.set()
        for thread in [*self.threads, self.progress]:
            thread.join(timeout=10)
        self.broker.close()
        self.render.close()
        self.redis.close()
        self.db.dispose()


def main() -> None:
    settings = load_settings()
    configure_logging("integrations-queue", settings.log_level)
    serve_metrics("queue-bridge")
    bridge = QueueBridge(settings, load_config(settings))
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    bridge.start()
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    bridge.stop()


if __name__ == "__main__":
    main()
