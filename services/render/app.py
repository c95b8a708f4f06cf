"""The render domain's HTTP API: admission, jobs, uploads, the model catalog, and the
internal lookups other services make (``services.render.client``).

The gateway mounts it in its own process (``init_app``), so admitting a job costs no
extra hop; ``create_app`` builds it alone (tests, or a separate process behind ``RENDER_URL``).
"""
from __future__ import annotations

from flask import Flask

from services.auth.client import AuthClient
from services.credits.client import CreditsClient
from services.gallery.client import GalleryClient
from services.integrations.client import IntegrationsClient
from services.render import api
from services.render.accounts import ServiceAccountLimits
from services.render.config import RenderConfig, load_config
from services.render.pricing import PricingCache
from services.render.registry import ModelRegistry, Presets
from services.render.scheduler import FairQueue
from services.render.service import RenderService
from services.render.outbox import JobOutbox
from services.render.workflows import TemplateStore
from services.safety.client import ContentFilter
from shared.config import Settings, load_settings
from shared.db import Database
from shared.events import EventBus, redis_client
from shared.storage import make_storage
from shared.web import IdConverter, init_service_app


def create_app(settings: Settings | None = None, config: RenderConfig | None = None) -> Flask:
    settings = settings or load_settings()
    app = Flask(__name__)
    service = init_app(app, settings, config)
    app.extensions["db"] = service.db
    app.extensions["redis"] = service.redis  # shared.tokens checks revocations with it
    init_service_app(app, settings, internal=False,
                     ready_checks={"database": service.db.ping, "redis": service.redis.ping})
    return app


def init_app(app: Flask, settings: Settings, config: RenderConfig | None = None) -> RenderService:
    """Bind the render domain to ``app`` (``app.extensions["render"]``) and register its routes."""
    config = config or load_config(settings)
    credits = CreditsClient(settings.credits_url, settings.service_token)
    db = Database(settings.render_database_url)
    storage = make_storage(settings)
    gallery = GalleryClient(settings.gallery_url, settings.service_token, timeout=(2.0, 5.0))
    events = EventBus(redis_client(settings.redis_url))
    service = RenderService(
        settings=settings, config=config, db=db, fair=FairQueue(events.redis, config.queue_prefix), credits=credits,
        gallery=gallery, events=events, storage=storage,
        templates=TemplateStore(defaults=config.parameter_defaults),
        pricing=PricingCache(credits, config.pricing_cache_seconds),
        # A user's cancel waits for one answer from credits; the reconciler settles what it did not take.
        outbox=JobOutbox(db, credits, events, gallery, retry_seconds=0),
        auth=AuthClient(settings.auth_url, settings.service_token, timeout=(1.0, 3.0)),
        models=ModelRegistry(db, storage, gallery), presets=Presets(db),
        content_filter=ContentFilter.from_settings(settings, events.redis))
    app.extensions["render"] = service
    app.url_map.converters["id"] = IdConverter  # before the routes that use it (init_service_app comes later)
    app.extensions["render_account_limits"] = ServiceAccountLimits(
        IntegrationsClient(settings.integrations_url, settings.service_token, timeout=(2.0, 5.0)))
    app.register_blueprint(api.bp)
    return service
