"""A tiny Celery app for the broker tests: the platform's ``make_celery`` (``BROKER_URL``) and
two tasks, one that holds a slot and one that leaves a mark."""
from __future__ import annotations

import time
from pathlib import Path

from shared.config import load_settings
from shared.tasks import make_celery

celery = make_celery(load_settings(), "tests.broker")


@celery.task(name="tests.hold")
def hold(started: str, seconds: float) -> None:
    Path(started).touch()
    time.sleep(seconds)


@celery.task(name="tests.touch")
def touch(path: str) -> None:
    Path(path).touch()
