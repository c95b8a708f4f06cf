"""The integrations service's app: service accounts, webhooks, and the queue API's records."""
from __future__ import annotations

from flask import Flask

from shared.config import Settings, load_settings
from shared.db import Database
from shared.events import redis_client
from shared.web import init_service_app
from services.auth.client import AuthClient
from services.credits.client import CreditsClient
from services.integrations import api
from services.integrations.cli import integrations_cli
from services.integrations.config import IntegrationsConfig, load_config
from services.integrations.endpoints import WebhookEndpoints
from services.integrations.request_log import RequestLog
from services.integrations.service import ServiceAccounts
from services.integrations.signing import SigningKeys


def create_app(settings: Settings | None = None, config: IntegrationsConfig | None = None) -> Flask:
    settings = settings or load_settings()
    config = config or load_config(settings)
    app = Flask(__name__)
    db = Database(settings.integrations_database_url)
    redis = redis_client(settings.redis_url)
    keys = SigningKeys(config.secret)
    requests = RequestLog(db)
    accounts = ServiceAccounts(db, config, keys, AuthClient(settings.auth_url, settings.service_token),
                               CreditsClient(settings.credits_url, settings.service_token), requests)
    app.extensions["db"] = db
    app.extensions["redis"] = redis  # shared.tokens checks revocations with it on every request
    app.extensions["integrations"] = accounts
    app.extensions["integrations_webhooks"] = WebhookEndpoints(db, config, keys, accounts)
    app.extensions["integrations_requests"] = requests

    init_service_app(app, settings, internal=True, ready_checks={"database": db.ping, "redis": redis.ping})
    app.register_blueprint(api.bp)
    app.cli.add_command(integrations_cli)
    return app
