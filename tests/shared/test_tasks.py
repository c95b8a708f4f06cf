"""A Celery worker of the platform (``shared.tasks.make_celery``) outlives its Redis broker's death."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.config import PROJECT_ROOT, load_settings
from shared.tasks import make_celery
from tests.render_e2e.conftest import RedisServer, _wait

pytestmark = pytest.mark.e2e
QUEUE = "tests-broker"


def test_a_worker_outlives_redis_killed_while_a_task_runs_and_a_slot_is_free(tmp_path: Path):
    """The free slot keeps a BRPOP in flight, the running task a message unacknowledged: the
    teardown of that connection once killed the worker ("Unrecoverable error", RedisTransport)."""
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    env = {**os.environ, "BROKER_URL": redis_server.url, "REDIS_URL": redis_server.url}
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.shared.celery_app:celery", "worker", "-Q", QUEUE,
             "--pool", "threads", "--concurrency", "2", "-n", "broker-test@%h",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "info"],
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    sender = make_celery(load_settings(env), "tests.broker-sender")
    try:
        _wait(lambda: b" ready." in log.read_bytes(), 60, "the worker to be ready")
        started = tmp_path / "started"
        sender.send_task("tests.hold", args=[str(started), 6], queue=QUEUE)
        _wait(started.exists, 30, "the task to start")

        redis_server.stop()  # SIGKILL
        _wait(lambda: b"Connection to broker lost" in log.read_bytes(), 30, "the worker to see its broker gone")
        redis_server.start()  # from its append-only file: the queue and the unacknowledged message are back

        served = tmp_path / "served"
        sender.send_task("tests.touch", args=[str(served)], queue=QUEUE)
        _wait(lambda: served.exists() or worker.poll() is not None, 60, "the worker to serve again")
        # The held task ends and acknowledges on the channel that died: a lost acknowledgement (Redis
        # redelivers the message after its visibility timeout), not the worker's end.
        _wait(lambda: b"Couldn't ack" in log.read_bytes() or worker.poll() is not None, 60,
              "the held task to acknowledge")
        output = log.read_text(errors="replace")
        assert worker.poll() is None, output[-4000:]
        assert served.exists() and "Unrecoverable error" not in output, output[-4000:]
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait(timeout=15)
        redis_server.stop()
