"""The gateway application: ``gunicorn -k gthread --threads 64 -w 2 'services.gateway.app:create_app()'``."""
from __future__ import annotations

from flask import Flask

from services.gateway import files, health, proxy, render_api, security, ws
from shared.config import Settings, load_settings
from shared.events import redis_client
from shared.web import init_service_app

# One pooled upstream connection per gunicorn thread.
UPSTREAM_POOL_SIZE = 64
WEBSOCKET_OPTIONS = {"ping_interval": 25, "max_message_size": 64 * 1024}


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    app = Flask(__name__, static_folder=str(settings.web_root), static_url_path="/static")
    app.config["SOCK_SERVER_OPTIONS"] = WEBSOCKET_OPTIONS

    session = proxy.pooled_session(UPSTREAM_POOL_SIZE)
    redis = redis_client(settings.redis_url)
    checks = health.dependency_checks(settings, session, redis)
    app.extensions["gateway_redis"] = redis
    app.extensions["gateway_checks"] = checks

    init_service_app(app, settings, internal=False, ready_checks=checks)
    security.init_security(app)
    proxy.init_proxy(app, settings, session)
    ws.sock.init_app(app)
    app.register_blueprint(files.bp)
    app.register_blueprint(health.bp)
    render_api.init_app(app, settings)
    return app
