"""Settings only the integrations service reads (its API, the queue bridge and the webhook
dispatcher). The broker is the platform's ``BROKER_URL`` (shared/config.py)."""
from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Mapping

from shared.config import ConfigError, Settings, env_bool, env_positive, env_str


@dataclass(frozen=True)
class IntegrationsConfig:
    secret: bytes  # derives every signing secret (queue keys, webhook keys); never leaves the platform
    public_url: str  # base of the image URLs in queue replies and webhook payloads
    queue_prefix: str = "queue-api"
    max_message_bytes: int = 64 * 1024
    queue_threads: int = 4
    default_max_active_jobs: int = 8
    default_url_ttl_seconds: int = 86400
    webhook_allow_private: bool = False
    webhook_retry_base_seconds: int = 30
    webhook_give_up_seconds: int = 86400
    webhook_timeout_seconds: int = 10


def _secret(env: Mapping[str, str], settings: Settings) -> bytes:
    raw = env_str(env, "INTEGRATIONS_SECRET", "")
    if raw:
        if len(raw) < 32:
            raise ConfigError("INTEGRATIONS_SECRET must be at least 32 characters")
        return raw.encode("utf-8")
    # Like MEDIA_SIGNING_SECRET: derived from the service token when not given, so local runs need no setup.
    return hmac.new(settings.service_token.encode("utf-8"), b"integrations-secret", hashlib.sha256).digest()


def load_config(settings: Settings, env: Mapping[str, str] | None = None) -> IntegrationsConfig:
    env = os.environ if env is None else env
    prefix = env_str(env, "QUEUE_API_PREFIX", "queue-api")
    if not all(c.isalnum() or c in "-_." for c in prefix) or len(prefix) > 64:
        raise ConfigError(f"QUEUE_API_PREFIX may hold letters, digits, '-', '_' and '.', got {prefix!r}")
    return IntegrationsConfig(
        secret=_secret(env, settings),
        public_url=env_str(env, "PUBLIC_URL", f"http://127.0.0.1:{settings.gateway_port}").rstrip("/"),
        queue_prefix=prefix,
        max_message_bytes=env_positive(env, "QUEUE_API_MAX_BYTES", 64 * 1024),
        queue_threads=env_positive(env, "QUEUE_API_THREADS", 4),
        default_max_active_jobs=env_positive(env, "SERVICE_ACCOUNT_MAX_ACTIVE_JOBS", 8),
        default_url_ttl_seconds=env_positive(env, "QUEUE_API_URL_TTL_SECONDS", 86400),
        webhook_allow_private=env_bool(env, "WEBHOOK_ALLOW_PRIVATE", False),
        webhook_retry_base_seconds=env_positive(env, "WEBHOOK_RETRY_BASE_SECONDS", 30),
        webhook_give_up_seconds=env_positive(env, "WEBHOOK_GIVE_UP_SECONDS", 86400),
        webhook_timeout_seconds=env_positive(env, "WEBHOOK_TIMEOUT_SECONDS", 10),
    )
