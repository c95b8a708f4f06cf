"""The credits service's own settings, read once from the environment and typed.

``SIGNUP_BONUS``           credits every new account receives once (default 500)
``CREDITS_PRICING``        JSON object workflow → credits per image (positive integers)
``CREDITS_HOLD_TTL_SECONDS`` how long an unsettled hold lives (default 2 × JOB_DEADLINE_SECONDS)
``CREDITS_TIMEZONE``       IANA zone for "this month" in the stats (default Asia/Shanghai)
``CREDITS_SWEEP_INTERVAL_SECONDS`` period of the expired-hold sweeper (default 60)
``CREDITS_LOW_THRESHOLD``  a movement taking available credits below it announces ``credits.low`` (default 100)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Mapping
from zoneinfo import ZoneInfo

from shared.config import ConfigError, Settings, env_int, env_positive, env_timezone

DEFAULT_PRICING = {"text2img": 15, "img2img": 15, "upscale": 10, "text2img_lora": 15, "flux_text2img": 15}
MAX_PRICE_PER_IMAGE = 100_000


@dataclass(frozen=True)
class CreditsConfig:
    signup_bonus: int = 500
    pricing: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PRICING))
    hold_ttl: timedelta = timedelta(seconds=1200)
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    sweep_interval_seconds: int = 60
    low_threshold: int = 100


def parse_pricing(raw: str) -> dict[str, int]:
    """``{"workflow": price}`` with positive integer prices; ConfigError otherwise."""
    try:
        pricing = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"CREDITS_PRICING must be a JSON object, got {raw!r}") from exc
    if not isinstance(pricing, dict) or not pricing:
        raise ConfigError("CREDITS_PRICING must be a non-empty JSON object of workflow → price")
    for workflow, price in pricing.items():
        if not workflow or len(workflow) > 64:
            raise ConfigError(f"CREDITS_PRICING has an invalid workflow name {workflow!r}")
        if isinstance(price, bool) or not isinstance(price, int) or not 0 < price <= MAX_PRICE_PER_IMAGE:
            raise ConfigError(f"CREDITS_PRICING[{workflow!r}] must be an integer from 1 to "
                              f"{MAX_PRICE_PER_IMAGE}, got {price!r}")
    return pricing


def load_config(settings: Settings, env: Mapping[str, str] | None = None) -> CreditsConfig:
    env = os.environ if env is None else env
    raw_pricing = env.get("CREDITS_PRICING")
    pricing = parse_pricing(raw_pricing) if raw_pricing else dict(DEFAULT_PRICING)
    zone = env_timezone(env, "CREDITS_TIMEZONE", "Asia/Shanghai")
    ttl = env_positive(env, "CREDITS_HOLD_TTL_SECONDS", 2 * settings.job_deadline_seconds)
    signup_bonus = env_int(env, "SIGNUP_BONUS", 500)
    if signup_bonus < 0:
        raise ConfigError(f"SIGNUP_BONUS must not be negative, got {signup_bonus}")
    low_threshold = env_int(env, "CREDITS_LOW_THRESHOLD", 100)
    if low_threshold < 0:
        raise ConfigError(f"CREDITS_LOW_THRESHOLD must not be negative, got {low_threshold}")
    return CreditsConfig(signup_bonus=signup_bonus, pricing=pricing, hold_ttl=timedelta(seconds=ttl), timezone=zone,
                         sweep_interval_seconds=env_positive(env, "CREDITS_SWEEP_INTERVAL_SECONDS", 60),
                         low_threshold=low_threshold)
