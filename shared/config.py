"""Typed configuration, read once from the environment.

Every setting has an explicit type. Development defaults run the whole platform
on one machine; production mode refuses to start when a secret is missing.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the process must not start."""


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name)
    return default if value is None or value == "" else value


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def env_seconds(env: Mapping[str, str], name: str, default: float, *, maximum: float | None = None,
                zero: bool = True) -> float:
    """A duration in seconds (``default`` when unset): not negative, at most ``maximum``, and
    not 0 unless ``zero`` (0 then means off)."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from exc
    if value < 0 or (value == 0 and not zero) or (maximum is not None and value > maximum):
        if maximum is None:
            bounds = "0 (off) or more" if zero else "above 0"
        else:
            bounds = f"from 0 (off) to {maximum:g}" if zero else f"above 0 and at most {maximum:g}"
        raise ConfigError(f"{name} must be {bounds} seconds, got {raw!r}")
    return value


def env_positive(env: Mapping[str, str], name: str, default: int) -> int:
    value = env_int(env, name, default)
    if value < 1:
        raise ConfigError(f"{name} must be positive (at least 1), got {value}")
    return value


def env_timezone(env: Mapping[str, str], name: str, default: str) -> ZoneInfo:
    zone_name = env_str(env, name, default)
    try:
        return ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"{name} is not a known time zone: {zone_name!r}") from exc


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be a boolean (true/false), got {raw!r}")


@dataclass(frozen=True)
class Settings:
    env: str
    data_dir: Path
    database_url: str
    auth_database_url: str
    credits_database_url: str
    gallery_database_url: str
    render_database_url: str
    integrations_database_url: str
    safety_database_url: str
    redis_url: str
    broker_url: str  # Celery's broker and the queue API's: Redis (the default) or RabbitMQ (amqp://)
    service_token: str
    jwt_private_key_path: Path
    jwt_public_key_path: Path
    access_token_minutes: int
    gateway_port: int
    auth_url: str
    credits_url: str
    gallery_url: str
    integrations_url: str
    safety_url: str
    render_url: str  # the render domain's API, mounted by the gateway
    web_root: Path
    job_deadline_seconds: int
    log_level: str
    edge_cache_namespace: str = "edge"  # Redis key prefix of the gateway's edge cache, shared with its invalidators
    edge_detail_seconds: int = 60  # a work's details in the edge cache, and its counters in Redis, live this long

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @property
    def is_production(self) -> bool:
        return self.env == "production"


def _default_sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'platform.db'}"


def _service_token(env: Mapping[str, str], app_env: str, data_dir: Path) -> str:
    token = env.get("SERVICE_TOKEN")
    if token:
        return token
    if app_env == "production":
        raise ConfigError("SERVICE_TOKEN must be set in production")
    # Development: one random token per data folder, shared by every local process.
    path = data_dir / "service_token"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    candidate = secrets.token_urlsafe(32)
    try:
        with open(path, "x") as handle:
            handle.write(candidate)
        os.chmod(path, 0o600)
        return candidate
    except FileExistsError:
        return path.read_text().strip()


def _broker_url(env: Mapping[str, str], redis_url: str) -> str:
    url = env_str(env, "BROKER_URL", redis_url)
    if url.split("://", 1)[0] not in ("redis", "rediss", "amqp", "amqps"):
        raise ConfigError(f"BROKER_URL must be a redis:// or amqp:// URL, got {url!r}")
    return url


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    app_env = env_str(env, "APP_ENV", "development")
    if app_env not in ("development", "production", "test"):
        raise ConfigError(f"APP_ENV must be development, production or test, got {app_env!r}")
    data_dir = Path(env_str(env, "DATA_DIR", str(PROJECT_ROOT / "var"))).resolve()
    database_url = env_str(env, "DATABASE_URL", _default_sqlite_url(data_dir))
    keys_dir = data_dir / "keys"
    private_key = Path(env_str(env, "JWT_PRIVATE_KEY_PATH", str(keys_dir / "jwt_private.pem")))
    public_key = Path(env_str(env, "JWT_PUBLIC_KEY_PATH", str(keys_dir / "jwt_public.pem")))
    if app_env == "production" and not (env.get("JWT_PRIVATE_KEY_PATH") or env.get("JWT_PUBLIC_KEY_PATH")):
        raise ConfigError("JWT_PRIVATE_KEY_PATH and JWT_PUBLIC_KEY_PATH must be set in production")
    auth_port = env_int(env, "AUTH_PORT", 8001)
    credits_port = env_int(env, "CREDITS_PORT", 8002)
    gallery_port = env_int(env, "GALLERY_PORT", 8003)
    gateway_port = env_int(env, "GATEWAY_PORT", 8000)
    integrations_port = env_int(env, "INTEGRATIONS_PORT", 8005)
    safety_port = env_int(env, "SAFETY_PORT", 8004)
    redis_url = env_str(env, "REDIS_URL", "redis://127.0.0.1:6379/0")
    return Settings(
        env=app_env,
        data_dir=data_dir,
        database_url=database_url,
        auth_database_url=env_str(env, "AUTH_DATABASE_URL", database_url),
        credits_database_url=env_str(env, "CREDITS_DATABASE_URL", database_url),
        gallery_database_url=env_str(env, "GALLERY_DATABASE_URL", database_url),
        render_database_url=env_str(env, "RENDER_DATABASE_URL", database_url),
        integrations_database_url=env_str(env, "INTEGRATIONS_DATABASE_URL", database_url),
        safety_database_url=env_str(env, "SAFETY_DATABASE_URL", database_url),
        redis_url=redis_url,
        broker_url=_broker_url(env, redis_url),
        service_token=_service_token(env, app_env, data_dir),
        jwt_private_key_path=private_key,
        jwt_public_key_path=public_key,
        access_token_minutes=env_positive(env, "ACCESS_TOKEN_MINUTES", 15),
        gateway_port=gateway_port,
        auth_url=env_str(env, "AUTH_URL", f"http://127.0.0.1:{auth_port}"),
        credits_url=env_str(env, "CREDITS_URL", f"http://127.0.0.1:{credits_port}"),
        gallery_url=env_str(env, "GALLERY_URL", f"http://127.0.0.1:{gallery_port}"),
        integrations_url=env_str(env, "INTEGRATIONS_URL", f"http://127.0.0.1:{integrations_port}"),
        safety_url=env_str(env, "SAFETY_URL", f"http://127.0.0.1:{safety_port}"),
        render_url=env_str(env, "RENDER_URL", f"http://127.0.0.1:{gateway_port}"),
        web_root=Path(env_str(env, "WEB_ROOT", str(PROJECT_ROOT / "web" / "dist"))),
        job_deadline_seconds=env_int(env, "JOB_DEADLINE_SECONDS", 600),
        log_level=env_str(env, "LOG_LEVEL", "INFO"),
        edge_cache_namespace=env_str(env, "EDGE_CACHE_NAMESPACE", "edge"),
        edge_detail_seconds=env_positive(env, "EDGE_DETAIL_SECONDS", 60),
    )
