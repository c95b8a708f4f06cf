"""The safety service's app: the term list, its publication to Redis, the audit log."""
from __future__ import annotations

from flask import Flask

from shared.config import Settings, load_settings
from shared.db import Database
from shared.events import redis_client
from shared.storage import make_storage
from shared.web import init_service_app
from services.safety import api
from services.safety.audit import AuditLog
from services.safety.cli import safety_cli
from services.safety.client import ContentFilter
from services.safety.config import SafetyConfig, load_config
from services.safety.service import TermList


def create_app(settings: Settings | None = None, config: SafetyConfig | None = None) -> Flask:
    settings = settings or load_settings()
    config = config or load_config(settings)
    app = Flask(__name__)
    db = Database(settings.safety_database_url)
    redis = redis_client(settings.redis_url)
    audit = AuditLog(db, redis, config, make_storage(settings))
    terms = TermList(db, redis, audit, config)
    app.extensions["db"] = db
    app.extensions["redis"] = redis  # shared.tokens checks revocations with it on every request
    app.extensions["safety_terms"] = terms
    app.extensions["safety_audit"] = audit
    app.extensions["safety_filter"] = ContentFilter(redis, None, refresh_seconds=0)
    init_service_app(app, settings, internal=True, ready_checks={"database": db.ping, "redis": redis.ping})
    app.register_blueprint(api.bp)
    app.cli.add_command(safety_cli)
    return app
