"""What one worker process is doing, shared by its task threads and its heartbeat, and how
it drains.

SIGTERM (Celery's warm shutdown) stops consuming at once; the jobs in flight then have
``RENDER_DRAIN_SECONDS`` to finish. When that time is up, every job still inside ComfyUI
is interrupted and handed back to its queue (``hand_back``): the job turns ``queued``
again with its hold untouched and the attempt not counted, and another worker runs it. A
job already delivering its images finishes (that takes moments), so nothing delivered is
lost and nothing is charged twice (captures carry per-image idempotency keys).

An administrator's drain (``services.render.fleet``) only stops consuming: the worker stays
alive, its jobs finish, and it consumes again when resumed.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from shared.db import isoformat, utcnow

log = logging.getLogger(__name__)


class WorkerState:
    def __init__(self, name: str, host: str, drain_seconds: float) -> None:
        self.name = name
        self.host = host
        self.drain_seconds = drain_seconds
        self.started_at = isoformat(utcnow())
        self.shutting_down = threading.Event()
        self.hand_back = threading.Event()
        self.paused = False  # an administrator's drain, obeyed
        self.in_flight = 0
        self.done = 0
        self.failed = 0
        self.loaded_model: str | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    @property
    def state(self) -> str:
        return "draining" if self.shutting_down.is_set() or self.paused else "active"

    def job_started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def job_ended(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self._idle.notify_all()

    def count(self, status: str) -> None:
        with self._lock:
            if status == "succeeded":
                self.done += 1
            elif status == "failed":
                self.failed += 1

    def loaded(self, model: str | None) -> None:
        if model:
            self.loaded_model = model

    def start_drain(self, on_change: Callable[[], None] | None = None) -> None:
        """SIGTERM: from now on the worker is draining; after ``drain_seconds`` the jobs still
        running are handed back. Returns at once (it may be called from a signal handler)."""
        if self.shutting_down.is_set():
            return
        self.shutting_down.set()
        threading.Thread(target=self._drain, args=(on_change,), name="render-drain", daemon=True).start()

    def _drain(self, on_change: Callable[[], None] | None) -> None:
        log.info("draining: %s job(s) in flight get %s s to finish", self.in_flight, self.drain_seconds)
        if on_change is not None:
            on_change()
        deadline = time.monotonic() + self.drain_seconds
        with self._lock:
            while self.in_flight and time.monotonic() < deadline:
                self._idle.wait(timeout=max(0.0, deadline - time.monotonic()))
            left = self.in_flight
        if left:
            log.warning("drain time is up: handing %s running job(s) back to the queue", left)
            self.hand_back.set()

    def wait_idle(self, timeout: float) -> bool:
        """Until no job is in flight (the heartbeat lives that long after the shutdown)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.in_flight and time.monotonic() < deadline:
                self._idle.wait(timeout=max(0.0, deadline - time.monotonic()))
            return self.in_flight == 0
