"""The gateway application: ``gunicorn -k deploy.gevent_worker.GeventServerWorker --worker-connections N -w 2
'services.gateway.app:create_app()'`` (``deploy/processes.py`` has the whole command; ``services/gateway/ws.py``
says why gevent)."""
from __future__ import annotations

from flask import Flask

from services.auth.client import AuthClient
from services.gallery.client import GalleryClient
from services.gateway import clientaddr, files, health, openapi, proxy, ratelimit, security, ws
from services.gateway.api_tokens import TokenExchange, init_api_tokens
from services.gateway.cache import EdgeCache
from services.gateway.config import GatewayConfig, load_config
from services.gateway.fast_path import CachedReadsFastPath, ProxiedReadsFastPath
from services.gateway.public_reads import PublicReads
from services.gateway.turns import TakeTurns, under_gevent
from services.render.app import init_app as init_render
from services.render.config import RenderConfig
from shared.config import Settings, load_settings
from shared.events import connect, redis_client
from shared.web import init_service_app

# Pooled connections kept per upstream service; more requests at once open (and close) extra ones.
UPSTREAM_POOL_SIZE = 64


def create_app(settings: Settings | None = None, config: GatewayConfig | None = None,
               render_config: RenderConfig | None = None) -> Flask:
    settings = settings or load_settings()
    config = config or load_config(settings)
    app = Flask(__name__, static_folder=None)

    redis = redis_client(settings.redis_url)
    render = init_render(app, settings, render_config)  # the render domain's API, mounted here: admission costs no extra hop
    probes = health.probe_session()
    checks = health.dependency_checks(settings, probes, redis, render)
    app.extensions["gateway_config"] = config
    app.extensions["redis"] = redis  # shared.tokens checks revocations with it; rate limits, sockets
    app.extensions["gateway_probes"] = probes
    app.extensions["gateway_checks"] = checks
    app.extensions["gateway_component_states"] = health.component_states(settings, probes, redis, render)
    # Cached bodies are bytes: the edge cache has its own binary Redis client.
    edge_cache = EdgeCache(connect(settings.redis_url), settings.edge_cache_namespace,
                           config.edge_cache_seconds, settings.edge_detail_seconds)
    app.extensions["gateway_public_reads"] = PublicReads(
        edge_cache, GalleryClient(settings.gallery_url, settings.service_token,
                                  timeout=(config.connect_timeout, config.get_read_timeout), likes=edge_cache.redis))

    # Hooks run in this order: request id, proxy's receipt time, API token exchange, body limits, rate limits,
    # CORS preflight.
    init_service_app(app, settings, internal=False, ready_checks=checks,
                     ready_info=health.informational_checks(render))
    app.before_request(clientaddr.note_proxy_request_start)
    init_api_tokens(app, TokenExchange(AuthClient(settings.auth_url, settings.service_token, timeout=(2.0, 5.0)),
                                       config.api_token_cache_seconds))
    security.init_security(app)
    ratelimit.init_rate_limits(app, config.rate_limits, redis, settings.service_token)
    security.init_cors(app, config.cors_origins)
    proxy.init_proxy(app, settings, config, UPSTREAM_POOL_SIZE)
    ws.init_sockets(app, config, settings.redis_url, redis)
    app.register_blueprint(files.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    app.wsgi_app = ProxiedReadsFastPath(app.wsgi_app, app.url_map, app.extensions["gateway_proxy"],
                                        app.extensions["gateway_rate_limiter"], config.rate_limits,
                                        config.trusted_proxies, bool(config.cors_origins), edge_cache.enabled)
    if edge_cache.enabled:
        app.wsgi_app = CachedReadsFastPath(app.wsgi_app, edge_cache, app.extensions["gateway_rate_limiter"],
                                           config.rate_limits, config.trusted_proxies, bool(config.cors_origins),
                                           tokens=app.extensions.get("verified_tokens"),
                                           gallery=app.extensions["gateway_public_reads"].gallery)
    if under_gevent():  # a gevent worker, as production runs the gateway
        app.wsgi_app = TakeTurns(app.wsgi_app)
    return app
