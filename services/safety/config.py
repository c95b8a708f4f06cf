"""Settings of the safety service and of the content filter every caller runs."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from shared.config import ConfigError, Settings, env_positive, env_str


@dataclass(frozen=True)
class SafetyConfig:
    refresh_seconds: float = 1.0  # how often a caller asks Redis whether the list changed
    audit_retention_days: int = 365
    max_terms: int = 50_000


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env_str(env, name, str(default))
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from exc
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {raw!r}")
    return value


def load_config(settings: Settings | None = None, env: Mapping[str, str] | None = None) -> SafetyConfig:
    env = os.environ if env is None else env
    return SafetyConfig(
        refresh_seconds=_seconds(env, "SAFETY_REFRESH_SECONDS", 1.0),
        audit_retention_days=env_positive(env, "SAFETY_AUDIT_RETENTION_DAYS", 365),
        max_terms=env_positive(env, "SAFETY_MAX_TERMS", 50_000),
    )
