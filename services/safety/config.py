"""Settings of the safety service and of the content filter every caller runs."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from shared.config import Settings, env_positive, env_seconds


@dataclass(frozen=True)
class SafetyConfig:
    refresh_seconds: float = 1.0  # how often a caller asks Redis whether the list changed
    audit_retention_days: int = 365
    max_terms: int = 50_000


def load_config(settings: Settings | None = None, env: Mapping[str, str] | None = None) -> SafetyConfig:
    env = os.environ if env is None else env
    return SafetyConfig(
        refresh_seconds=env_seconds(env, "SAFETY_REFRESH_SECONDS", 1.0),
        audit_retention_days=env_positive(env, "SAFETY_AUDIT_RETENTION_DAYS", 365),
        max_terms=env_positive(env, "SAFETY_MAX_TERMS", 50_000),
    )
