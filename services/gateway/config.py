"""Settings only the gateway reads: the edge's rate limits, trusted proxies, CORS origins,
upstream timeouts, the edge cache's lifetime, the demo notice. Each is an environment variable; the README lists them.

``RATE_LIMIT_*`` values are ``<count>/<period>`` such as ``5/minute``, ``3/hour`` or
``10/30 seconds`` (see ``services.gateway.ratelimit.parse_rate``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from services.gateway.clientaddr import Network, parse_networks
from services.gateway.ratelimit import Rate, RateLimits, parse_rate
from shared.config import ConfigError, Settings, env_bool, env_positive, env_seconds, env_str


# Connections a gateway process keeps for HTTP beyond its sockets' cap, so sockets never crowd HTTP out.
HTTP_CONNECTIONS_PER_PROCESS = 1000


@dataclass(frozen=True)
class GatewayConfig:
    rate_limits: RateLimits
    trusted_proxies: tuple[Network, ...]
    cors_origins: frozenset[str]
    connect_timeout: float
    read_timeout: float      # for writes: an upstream may legitimately work for a while
    get_read_timeout: float  # reads should be quick; a hung upstream fails fast
    ws_recheck_seconds: float  # how often an open socket re-checks its token's revocation
    api_token_cache_seconds: float = 60.0  # how long an API token's exchanged access token is reused
    ws_ping_seconds: float = 25.0     # the server pings each socket this often; unanswered twice: closed
    ws_max_per_user: int = 8          # a user's sockets across every gateway process; the oldest gives way
    ws_max_per_process: int = 4000    # sockets one gateway process holds; beyond: closed with 1013
    demo_backend: bool = False  # images come from the ComfyUI emulator (make run says so on the page)
    edge_cache_seconds: float = 5.0  # how long anonymous public reads are kept (0: not cached)

    @property
    def worker_connections(self) -> int:
        """gunicorn's --worker-connections for one gateway process: its sockets, plus room for HTTP."""
        return self.ws_max_per_process + HTTP_CONNECTIONS_PER_PROCESS


def _rate(env: Mapping[str, str], name: str, default: str) -> Rate:
    text = env_str(env, name, default)
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from exc


def _origins(raw: str) -> frozenset[str]:
    origins = frozenset(part.strip().rstrip("/") for part in raw.replace(" ", ",").split(",") if part.strip())
    for origin in origins:
        if origin == "*" or "://" not in origin:
            raise ConfigError(f"CORS_ORIGINS lists exact origins such as https://app.example.com, got {origin!r}")
    return origins


def load_config(settings: Settings, env: Mapping[str, str] | None = None) -> GatewayConfig:
    env = os.environ if env is None else env
    try:
        trusted = parse_networks(env_str(env, "TRUSTED_PROXIES", ""))
    except ValueError as exc:
        raise ConfigError(f"TRUSTED_PROXIES: {exc}") from exc
    return GatewayConfig(
        rate_limits=RateLimits(
            global_ip=_rate(env, "RATE_LIMIT_GLOBAL", "300/minute"),
            login=_rate(env, "RATE_LIMIT_LOGIN", "5/minute"),
            register=_rate(env, "RATE_LIMIT_REGISTER", "3/hour"),
            password_forgot=_rate(env, "RATE_LIMIT_PASSWORD_FORGOT", "5/hour"),
            generate=_rate(env, "RATE_LIMIT_GENERATE", "20/minute"),
            label_verify=_rate(env, "RATE_LIMIT_LABEL_VERIFY", "20/minute"),
            namespace=env_str(env, "RATE_LIMIT_NAMESPACE", "ratelimit"),
        ),
        trusted_proxies=trusted,
        cors_origins=_origins(env_str(env, "CORS_ORIGINS", "")),
        connect_timeout=env_seconds(env, "UPSTREAM_CONNECT_TIMEOUT", 2.0, maximum=3600, zero=False),
        read_timeout=env_seconds(env, "UPSTREAM_READ_TIMEOUT", 30.0, maximum=3600, zero=False),
        get_read_timeout=env_seconds(env, "UPSTREAM_GET_READ_TIMEOUT", 10.0, maximum=3600, zero=False),
        ws_recheck_seconds=env_seconds(env, "WS_RECHECK_SECONDS", 30.0, maximum=3600, zero=False),
        api_token_cache_seconds=env_seconds(env, "API_TOKEN_CACHE_SECONDS", 60.0, maximum=3600, zero=False),
        ws_ping_seconds=env_seconds(env, "WS_PING_SECONDS", 25.0, maximum=3600, zero=False),
        ws_max_per_user=env_positive(env, "WS_MAX_PER_USER", 8),
        ws_max_per_process=env_positive(env, "WS_MAX_PER_PROCESS", 4000),
        demo_backend=env_bool(env, "DEMO_BACKEND", False),
        edge_cache_seconds=env_seconds(env, "EDGE_CACHE_SECONDS", 5.0, maximum=300),
    )
