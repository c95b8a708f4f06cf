"""The render worker's Celery app.

    celery -A services.render_worker.worker:celery worker -Q render --concurrency 1 -n render@%h
"""
from __future__ import annotations

from celery.signals import worker_ready

from shared.config import load_settings
from shared.events import redis_client
from shared.tasks import make_celery

from .catalog import CatalogPublisher
from .comfyui import ComfyUIClient
from .workflows import load_templates

settings = load_settings()
celery = make_celery(settings, "render_worker")


@worker_ready.connect
def start_catalog_publisher(sender, **_kwargs) -> None:
    """Advertise this worker's models while it runs (the thread dies with the process)."""
    CatalogPublisher(ComfyUIClient(settings.comfyui_url), redis_client(settings.redis_url), sender.hostname,
                     sorted(load_templates())).start()


from . import tasks  # noqa: E402,F401  (registers the tasks on ``celery``)
