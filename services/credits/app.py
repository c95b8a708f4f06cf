"""The credits service's app factory."""
from __future__ import annotations

from flask import Flask

from shared.config import Settings, load_settings
from shared.db import Database
from shared.events import EventBus, redis_client
from shared.web import init_service_app
from services.credits import api
from services.credits.adjustments import Adjustments
from services.credits.cli import credits_cli
from services.credits.config import CreditsConfig, load_config
from services.credits.fast_path import BalanceFastPath, MovementsFastPath
from services.credits.ledger import Ledger
from services.credits.models import protect_ledger
from services.credits.redeem import RedeemCodes
from services.credits.reports import Reports
from services.credits.service import CreditsService
from services.gallery.client import GalleryClient
from services.render.client import RenderClient


def create_app(settings: Settings | None = None, config: CreditsConfig | None = None) -> Flask:
    settings = settings or load_settings()
    config = config or load_config(settings)
    app = Flask(__name__)
    db = Database(settings.credits_database_url)
    protect_ledger(db.engine)
    redis = redis_client(settings.redis_url)
    ledger = Ledger(db, EventBus(redis), config.signup_bonus, config.low_threshold)
    credits = CreditsService(db, ledger, config)
    app.extensions["db"] = db
    app.extensions["redis"] = redis  # shared.tokens checks revocations with it on every request
    app.extensions["credits"] = credits
    app.extensions["credits_adjustments"] = Adjustments(
        ledger, GalleryClient(settings.gallery_url, settings.service_token, timeout=3.0))
    app.extensions["credits_redeem_codes"] = RedeemCodes(db, ledger)
    app.extensions["credits_reports"] = Reports(db, config.timezone, credits,
                                                RenderClient(settings.render_url, settings.service_token,
                                                             timeout=(1.0, 3.0)))

    init_service_app(app, settings, internal=True,
                     ready_checks={"database": db.ping, "redis": redis.ping})
    app.register_blueprint(api.bp)
    app.cli.add_command(credits_cli)
    app.wsgi_app = MovementsFastPath(
        BalanceFastPath(app.wsgi_app, credits, settings.service_token, app.extensions["verified_tokens"], redis),
        credits, settings.service_token)
    return app
