"""The audit recorder: ``python -m services.safety.recorder``. Stores what the content
filters of every process append to ``safety:audit`` (blocks, flags, review decisions), and
once an hour deletes rows past ``SAFETY_AUDIT_RETENTION_DAYS``. Several may run (a Redis
lock lets one drain at a time); the admin console's reads drain the stream too."""
from __future__ import annotations

import logging
import signal
import threading
import time

from shared.config import load_settings
from shared.db import Database
from shared.events import redis_client
from shared.metrics import serve_metrics
from shared.outage import Outage
from shared.storage import make_storage
from shared.web import configure_logging
from services.safety.audit import AuditLog
from services.safety.config import load_config

POLL_SECONDS = 1.0
PRUNE_SECONDS = 3600.0

log = logging.getLogger("services.safety.recorder")


def main() -> None:
    settings = load_settings()
    configure_logging("safety-recorder", settings.log_level)
    serve_metrics("safety-recorder")
    audit = AuditLog(Database(settings.safety_database_url), redis_client(settings.redis_url), load_config(settings),
                     make_storage(settings))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    pruned_at = float("-inf")
    log.info("recording the safety audit stream")
    outage = Outage(log, "audit pass")
    while not stop.is_set():
        try:
            audit.drain()
            if time.monotonic() - pruned_at >= PRUNE_SECONDS:
                pruned_at = time.monotonic()
                if removed := audit.prune():
                    log.info("%s audit rows past their retention deleted", removed)
        except Exception as exc:  # the loop must outlive a database outage
            outage.failed(exc, "trying again")
        else:
            outage.passed()
        stop.wait(POLL_SECONDS)


if __name__ == "__main__":
    main()
