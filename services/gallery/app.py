"""The gallery service app: ``gunicorn 'services.gallery.app:create_app()'``."""
from __future__ import annotations

from flask import Flask

from shared.config import Settings, load_settings
from shared.db import Database
from shared.events import EventBus, redis_client
from shared.storage import make_storage
from shared.web import configure_logging, init_service_app

from . import api
from .authors import AuthorDirectory
from services.auth.client import AuthClient
from services.render.client import RenderClient
from .cli import gallery_cli
from .config import load_gallery_config
from .service import Gallery


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    if settings.env != "test":  # under pytest, keep pytest's own log capture
        configure_logging("gallery", settings.log_level)
    app = Flask(__name__, static_folder=None)
    config = load_gallery_config()
    db = Database(settings.gallery_database_url)
    redis = redis_client(settings.redis_url)
    app.extensions["redis"] = redis  # shared.tokens checks revoked tokens with it
    app.extensions["gallery"] = Gallery(
        db=db, outputs=RenderClient(settings.render_url, settings.service_token),
        storage=make_storage(settings),
        authors=AuthorDirectory(AuthClient(settings.auth_url, settings.service_token, timeout=2.0),
                                config.author_cache_seconds),
        events=EventBus(redis), config=config)

    init_service_app(app, settings, internal=True, ready_checks={"database": db.ping})
    app.register_blueprint(api.bp)
    app.cli.add_command(gallery_cli)
    return app
