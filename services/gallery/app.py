"""The gallery service app: ``gunicorn 'services.gallery.app:create_app()'``."""
from __future__ import annotations

from flask import Flask
from sqlalchemy import text

from shared.config import Settings, load_settings
from shared.db import Database
from shared.storage import LocalStorage
from shared.web import configure_logging, init_service_app

from . import api
from .outputs import OutputsClient
from .service import Gallery


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    if settings.env != "test":  # under pytest, keep pytest's own log capture
        configure_logging("gallery", settings.log_level)
    app = Flask(__name__, static_folder=None)
    db = Database(settings.gallery_database_url)
    outputs = OutputsClient(settings.gateway_internal_url, settings.service_token)
    app.extensions["gallery"] = Gallery(db=db, outputs=outputs, storage=LocalStorage(settings.media_dir))

    def database_ready() -> None:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    init_service_app(app, settings, internal=True, ready_checks={"database": database_ready})
    app.register_blueprint(api.bp)
    return app
