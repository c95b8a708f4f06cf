"""The render worker's Celery app and its lifetime hooks.

Start one per ComfyUI (one per GPU), preferably with ``python -m services.render_worker
--comfyui URL`` (see ``__main__``), which consumes exactly the queues of the workflows
that ComfyUI can run and keeps ``RENDER_PROMPTS_IN_FLIGHT`` prompts inside it. Plain
``celery -A services.render_worker.worker:celery worker -Q ...`` works too: when the
worker is ready it adds the queues of every workflow its ComfyUI can run.

A worker id is ``<celery hostname>#<boot token>``: unique per start, shared by the pool's
processes. The Celery hostname (node name) ``<--name>@<host>`` is the worker's identity in the
fleet (``services.render.fleet``): drains, the operators' registry and metrics use it. While
the worker lives, a thread refreshes its heartbeat and catalog. Jobs of dead workers, lost
messages and unsettled credits are the reconciler's, a process of its own
(``services.render_worker.reconciler``), so they are looked after with no worker alive.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
import warnings
from typing import Callable

from celery.exceptions import CPendingDeprecationWarning
from celery.signals import celeryd_after_setup, setup_logging, worker_ready, worker_shutdown, worker_shutting_down
from celery.worker import loops
from celery.worker.consumer import connection as consumer_connection
from celery.worker.consumer import consumer

from shared.config import load_settings
from shared.heap import freeze_startup_objects
from shared.outage import ERROR_AFTER_SECONDS, lost_connection
from shared.tasks import make_celery
from shared.web import configure_logging

from services.render.catalog import runnable_workflows
from services.render_worker.drain import WorkerState
from services.render_worker.heartbeat import CatalogPublisher
from services.render_worker.comfyui import ComfyUIError
from services.render.config import load_config
from services.render.dispatch import declare_worker_queue, queue_name
from services.render_worker.pipeline import RenderContext, build_context

log = logging.getLogger(__name__)

settings = load_settings()
config = load_config(settings)
celery = make_celery(settings, "render_worker")
celery.conf.update(
    broker_transport_options={"visibility_timeout": config.visibility_timeout},
    worker_prefetch_multiplier=1,
    # After a lost broker connection Celery lowers the prefetch count and raises it again from the
    # callback of an acknowledgement, which the thread pool runs on the task's thread: a ``basic.qos``
    # waiting for its answer on the connection the consumer reads. The two readers race and the
    # consumer stalls (a minute or more: tests/chaos cuts a worker off). The scheduler sends a worker
    # no more messages than it has slots, so there is nothing to over-fetch.
    worker_enable_prefetch_count_reduction=False,
    # A lost broker connection does not stop the renders in flight: their acknowledgements are lost
    # with it and the redelivered messages are skipped by the jobs' claims (Celery 6 will cancel
    # them by default; its warning of that, at every reconnect, is silenced: ``_no_warning_at_every_reconnect``).
    worker_cancel_long_running_tasks_on_connection_loss=False,
    task_create_missing_queues=True,
    include=["services.render_worker.tasks"],  # imported by the worker at start, registering the tasks
)
BOOT_TOKEN = uuid.uuid4().hex[:8]


class AckLostWithConnection(logging.Filter):
    """Celery (kombu's ``Message.ack_log_error``/``reject_log_error``) logs as critical an
    acknowledgement the broker connection could not carry: after a reconnect, a task that ended
    while the connection was down acknowledges on the channel that died with it. Nothing is lost:
    the broker put the message back when the connection closed (RabbitMQ at once, Redis after the
    visibility timeout), the worker reads it again, and the job's claim skips it. A warning, then,
    with the reason in the line and no traceback: it must not page anyone."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.CRITICAL and str(record.msg).startswith(("Couldn't ack", "Couldn't reject")):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


class BrokerAway(logging.Filter):
    """Celery logs a lost broker at ERROR: every reconnect that fails ("consumer: Cannot connect
    to …") and, with a traceback, the teardown of the dead connection ("Error cleaning up after
    event loop"). A broker restart or a network blip is routine: the worker serves on (its renders go
    on; see ``AckLostWithConnection``), so for the first ``ERROR_AFTER_SECONDS`` of an outage these
    lines are warnings, with the reason and no traceback. A broker away longer is an error again,
    which an operator must hear of (``shared.outage``, the platform's other loops alike). Celery's
    "Connected to" ends the outage."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.clock = clock
        self.since: float | None = None  # when the outage began (``clock``)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == consumer_connection.logger.name:
            if record.msg == "Connected to %s":
                self.since = None
            return True
        if not _broker_lost(record):
            return True
        now = self.clock()
        if self.since is None:
            self.since = now
        if record.levelno >= logging.ERROR and now - self.since < ERROR_AFTER_SECONDS:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


def _broker_lost(record: logging.LogRecord) -> bool:
    """Whether Celery's ``record`` says the broker connection was lost or could not be made."""
    if record.name == consumer.logger.name:
        return (record.msg is consumer.CONNECTION_ERROR  # a connection that could not be made
                or (bool(record.args) and record.args[0] is consumer.CONNECTION_RETRY))  # one that was lost
    return (record.name == loops.logger.name and str(record.msg).startswith("Error cleaning up after event loop")
            and record.exc_info is not None and lost_connection(record.exc_info[1]))


# The logger Celery hands kombu for a task's acknowledgement (celery.worker.request).
logging.getLogger("celery.worker.request").addFilter(AckLostWithConnection())
_broker_away = BrokerAway()
for _logger in (consumer.logger, loops.logger, consumer_connection.logger):
    _logger.addFilter(_broker_away)

_lock = threading.Lock()
_contexts: dict[str, RenderContext] = {}
_threads: list[CatalogPublisher] = []
_states: dict[str, WorkerState] = {}


def worker_id(hostname: str | None) -> str:
    return f"{hostname or 'render'}#{BOOT_TOKEN}"


def context(hostname: str | None) -> RenderContext:
    """One context (DB pool, HTTP sessions, templates, the worker's state) per worker process."""
    wid = worker_id(hostname)
    with _lock:
        if wid not in _contexts:
            name, _, host = (hostname or "render").partition("@")
            state = _states.setdefault(wid, WorkerState(name, host or socket.gethostname(), config.drain_seconds))
            _contexts[wid] = build_context(settings, config, wid)
            _contexts[wid].state = state
        return _contexts[wid]


def _pause(hostname: str, queues: list[str]) -> Callable[[bool], None]:
    """Stop or resume consuming ``queues``: Celery's remote control, addressed to this worker
    (the consumer is not thread-safe, so the heartbeat thread asks it as an operator would)."""
    def pause(paused: bool) -> None:
        for queue in queues:
            if paused:
                celery.control.cancel_consumer(queue, destination=[hostname], reply=True, timeout=5)
            else:
                celery.control.add_consumer(queue, destination=[hostname], reply=True, timeout=5)
    return pause


# ``--workflows``: the workflows this worker may serve (None: every one its ComfyUI can run).
only_workflows: set[str] | None = None


def capable_queues(ctx: RenderContext) -> list[str]:
    node_classes, choices = ctx.capabilities()
    return [queue_name(config.queue_prefix, name)
            for name in runnable_workflows(ctx.templates.all(), node_classes, choices)
            if only_workflows is None or name in only_workflows]


@worker_ready.connect
def start_worker_threads(sender, **_kwargs) -> None:
    """Consume the capable queues and the worker's own (where the scheduler sends it jobs), start
    the heartbeat/catalog thread, and leave what start-up made out of the garbage collector."""
    ctx = context(sender.hostname)
    try:
        for queue in capable_queues(ctx):
            sender.add_task_queue(queue)
    except ComfyUIError as exc:
        log.warning("ComfyUI did not answer at start (%s); consuming only the queues given with -Q", exc)
    sender.add_task_queue(declare_worker_queue(sender.app, config.queue_prefix, ctx.worker_id))
    queues = sorted(sender.app.amqp.queues.consume_from or [])
    publisher = CatalogPublisher(ctx.comfyui, ctx.events.redis, ctx.worker_id, ctx.templates.all, queues,
                                 config.prompts_in_flight, interval=config.heartbeat_seconds,
                                 alive_ttl=config.alive_ttl, object_info_seconds=config.object_info_seconds,
                                 state=ctx.state, on_pause=_pause(sender.hostname, queues),
                                 on_change=ctx.fair.fleet_changed)
    publisher.refresh()
    publisher.start()
    _threads.append(publisher)
    log.info("render worker %s serving %s on %s", ctx.worker_id, queues, config.comfyui_url)
    freeze_startup_objects()


def _platform_logging(loglevel=None, **_kwargs) -> None:
    """JSON log lines like every other process (with the job id), instead of Celery's own."""
    configure_logging("render-worker", loglevel or settings.log_level)


if os.environ.get("LOG_FORMAT") == "json":
    setup_logging.connect(_platform_logging)


@celeryd_after_setup.connect
def _no_warning_at_every_reconnect(**_kwargs) -> None:
    """Celery warns at every lost broker connection that version 6 will cancel the tasks running
    then; this worker chose (``worker_cancel_long_running_tasks_on_connection_loss``). Added after
    Celery's logging set-up, which shows every warning of its own."""
    warnings.filterwarnings("ignore", message=r"\s*In Celery 5\.1 we introduced an optional breaking change",
                            category=CPendingDeprecationWarning)


@worker_shutting_down.connect
def drain(sender=None, **_kwargs) -> None:
    """SIGTERM (a warm shutdown; runs in the signal handler): Celery stops consuming, the
    jobs in flight get ``RENDER_DRAIN_SECONDS``, then the rest are handed back (``drain``)."""
    for state in _states.values():
        state.start_drain(on_change=lambda: [thread.refresh() for thread in _threads])


@worker_shutdown.connect
def stop_worker_threads(**_kwargs) -> None:
    """Withdraw the heartbeat once no job is in flight: a job still running on a worker whose
    heartbeat stopped would be taken over by the reconciler."""
    for state in _states.values():
        state.wait_idle(timeout=config.drain_seconds + 30)
    for thread in _threads:
        thread.stop()

