"""The render domain inside the gateway (admission, jobs, uploads, catalog, internal lookups)."""
from __future__ import annotations

from flask import Flask

from services.credits.client import CreditsClient
from services.render_worker.config import load_render_config
from services.render_worker.workflows import TemplateStore
from shared.config import Settings
from shared.db import Database
from shared.events import EventBus, redis_client
from shared.storage import make_storage
from shared.tasks import make_celery

from . import api
from .pricing import PricingCache
from .service import RenderService


def init_app(app: Flask, settings: Settings) -> None:
    """Bind the render domain to the gateway app and register its routes."""
    config = load_render_config(settings)
    credits = CreditsClient(settings.credits_url, settings.service_token)
    app.extensions["render"] = RenderService(
        settings=settings, config=config, db=Database(settings.render_database_url),
        celery=make_celery(settings, "gateway"), credits=credits, events=EventBus(redis_client(settings.redis_url)),
        storage=make_storage(settings), templates=TemplateStore(),
        pricing=PricingCache(credits, config.pricing_cache_seconds))
    app.register_blueprint(api.bp)
