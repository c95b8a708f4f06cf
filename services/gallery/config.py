"""The gallery's own settings, read once from the environment and typed.

``GALLERY_TIMEZONE``                 IANA zone for "today / this week / this month" (Asia/Shanghai)
``GALLERY_VIEW_WINDOW_MINUTES``      a viewer counts once per work per window (30)
``GALLERY_DOWNLOAD_WINDOW_MINUTES``  a downloader counts once per work per window (60)
``GALLERY_FEATURED_LIKES``           a public work with at least this many likes is featured (10)
``GALLERY_AUTHOR_CACHE_SECONDS``     how long author names and avatars from auth are cached (300)
``GALLERY_REVIEW_MODE``              publishing review: off, flagged-only (default) or all (``review.py``)
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Mapping
from zoneinfo import ZoneInfo

from shared.config import ConfigError, Settings, env_positive, env_str, env_timezone


@dataclass(frozen=True)
class GalleryConfig:
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    view_window: timedelta = timedelta(minutes=30)
    download_window: timedelta = timedelta(minutes=60)
    featured_likes: int = 10
    author_cache_seconds: int = 300
    review_mode: str = "flagged-only"


def load_config(settings: Settings, env: Mapping[str, str] | None = None) -> GalleryConfig:
    env = os.environ if env is None else env
    zone = env_timezone(env, "GALLERY_TIMEZONE", "Asia/Shanghai")
    review_mode = env_str(env, "GALLERY_REVIEW_MODE", "flagged-only")
    if review_mode not in ("off", "flagged-only", "all"):
        raise ConfigError(f"GALLERY_REVIEW_MODE must be off, flagged-only or all, got {review_mode!r}")
    return GalleryConfig(
        timezone=zone,
        view_window=timedelta(minutes=env_positive(env, "GALLERY_VIEW_WINDOW_MINUTES", 30)),
        download_window=timedelta(minutes=env_positive(env, "GALLERY_DOWNLOAD_WINDOW_MINUTES", 60)),
        featured_likes=env_positive(env, "GALLERY_FEATURED_LIKES", 10),
        author_cache_seconds=env_positive(env, "GALLERY_AUTHOR_CACHE_SECONDS", 300),
        review_mode=review_mode,
    )
