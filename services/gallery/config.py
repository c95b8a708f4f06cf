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
from zoneinfo import ZoneInfo

from shared.config import Settings, env_positive, env_timezone


@dataclass(frozen=True)
class GalleryConfig:
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    view_window: timedelta = timedelta(minutes=30)
    download_window: timedelta = timedelta(minutes=60)
    featured_likes: int = 10
    author_cache_seconds: int = 300


def load_config(settings: Settings, env: Mapping[str, str] | None = None) -> GalleryConfig:
    env = os.environ if env is None else env
    zone = env_timezone(env, "GALLERY_TIMEZONE", "Asia/Shanghai")
    return GalleryConfig(
        timezone=zone,
        view_window=timedelta(minutes=env_positive(env, "GALLERY_VIEW_WINDOW_MINUTES", 30)),
        download_window=timedelta(minutes=env_positive(env, "GALLERY_DOWNLOAD_WINDOW_MINUTES", 60)),
        featured_likes=env_positive(env, "GALLERY_FEATURED_LIKES", 10),
        author_cache_seconds=env_positive(env, "GALLERY_AUTHOR_CACHE_SECONDS", 300),
    )
