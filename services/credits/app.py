"""The credits service: balances, holds for render jobs, and the ledger."""
from __future__ import annotations

from datetime import timedelta

from flask import Flask
from sqlalchemy import text

from shared.config import Settings, load_settings
from shared.db import Database
from shared.events import EventBus, redis_client
from shared.web import init_service_app
from services.credits import api
from services.credits.service import CreditsService


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    app = Flask(__name__)
    db = Database(settings.credits_database_url)
    redis = redis_client(settings.redis_url)
    app.extensions["db"] = db
    # A hold outlives its job's deadline; expiry is recorded for a later sweeper.
    app.extensions["credits"] = CreditsService(db, EventBus(redis), settings.signup_bonus,
                                               hold_lifetime=timedelta(seconds=2 * settings.job_deadline_seconds))

    def database_ready() -> None:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    init_service_app(app, settings, internal=True,
                     ready_checks={"database": database_ready, "redis": redis.ping})
    app.register_blueprint(api.bp)
    return app
