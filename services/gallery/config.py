"""The gallery's own settings, read once from the environment and typed.

``GALLERY_TIMEZONE``                 IANA zone for "today / this week / this month" (Asia/Shanghai)
``GALLERY_VIEW_WINDOW_MINUTES``      a viewer counts once per work per window (30)
``GALLERY_DOWNLOAD_WINDOW_MINUTES``  a downloader counts once per work per window (60)
``GALLERY_FEATURED_LIKES``           a public work with at least this many likes is featured (10)
``GALLERY_AUTHOR_CACHE_SECONDS``     how long author names and avatars from auth are cached (300)
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.config import ConfigError


@dataclass(frozen=True)
class GalleryConfig:
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    view_window: timedelta = timedelta(minutes=30)
    download_window: timedelta = timedelta(minutes=60)
    featured_likes: int = 10
    author_cache_seconds: int = 300


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    return value


def load_gallery_config(env: Mapping[str, str] | None = None) -> GalleryConfig:
    env = os.environ if env is None else env
    zone_name = env.get("GALLERY_TIMEZONE") or "Asia/Shanghai"
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"GALLERY_TIMEZONE is not a known time zone: {zone_name!r}") from exc
    return GalleryConfig(
        timezone=zone,
        view_window=timedelta(minutes=_positive_int(env, "GALLERY_VIEW_WINDOW_MINUTES", 30)),
        download_window=timedelta(minutes=_positive_int(env, "GALLERY_DOWNLOAD_WINDOW_MINUTES", 60)),
        featured_likes=_positive_int(env, "GALLERY_FEATURED_LIKES", 10),
        author_cache_seconds=_positive_int(env, "GALLERY_AUTHOR_CACHE_SECONDS", 300),
    )
