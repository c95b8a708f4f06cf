"""Demo data for the gallery: many public works from synthetic authors, tags and likes.

Rows go in with bulk multi-row INSERTs in chunks (minutes, not hours, for 100,000 works
and a million likes). Author ids are synthetic (``first_user_id`` upwards) and the image
keys name no real file: the data exercises listing, search and likes, not media.
"""
from __future__ import annotations

import hashlib
import random
import time
from datetime import timedelta
from typing import Any, Callable

from sqlalchemy import func, insert, select

from shared.db import Database, utcnow
from services.gallery.models import Work, WorkLike, WorkTag, WorkTerm
from services.gallery.rules import hot_score
from services.gallery.search import search_text, term_rows

CHUNK = 5_000
SUBJECTS = ["lighthouse", "fox", "castle", "city", "forest", "robot", "dragon", "ocean", "mountain", "cat",
            "星空", "古镇", "山水", "少女", "机甲", "樱花", "长城", "赛博朋克城市", "水墨仙鹤", "雪山"]
STYLES = ["oil painting", "watercolor", "cyberpunk", "pixel art", "studio ghibli style", "photorealistic",
          "油画", "水彩", "国风", "二次元", "写实摄影", "浮世绘"]
MOODS = ["at dusk", "in the rain", "under neon lights", "at dawn", "in winter", "清晨", "黄昏", "夜晚", "雨中"]
TAGS = ["风景", "人物", "动漫", "写实", "科幻", "奇幻", "抽象", "AI艺术", "landscape", "portrait", "anime",
        "scifi", "fantasy", "cyberpunk", "nature", "city", "animal", "architecture", "国风", "水墨"]
MODELS = ["sd15.safetensors", "sdxl_base.safetensors", "dreamshaper_8.safetensors", "flux1-dev.safetensors",
          "anything_v5.safetensors"]


def _key(prefix: str, seed: str, extension: str) -> str:
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return f"{prefix}/{digest[:2]}/{digest[2:4]}/{digest}.{extension}"


def _like_counts(rng: random.Random, works: int, users: int, likes: int) -> list[int]:
    """A long-tailed spread of ``likes`` over works (a few popular, most with a handful)."""
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(works)]
    rng.shuffle(weights)
    total = sum(weights)
    counts = [min(users, int(likes * weight / total)) for weight in weights]
    short = likes - sum(counts)
    while short > 0:  # hand out the rounding remainder one by one
        index = rng.randrange(works)
        if counts[index] < users:
            counts[index] += 1
            short -= 1
    return counts


def seed_demo(db: Database, *, works: int, users: int, likes: int, first_user_id: int, seed: int = 1,
              echo: Callable[[str], Any] = print) -> dict[str, Any]:
    started = time.monotonic()
    rng = random.Random(seed)
    likes = min(likes, works * users)
    counts = _like_counts(rng, works, users, likes)
    now = utcnow()
    with db.transaction() as session:
        first_id = (session.scalar(select(func.max(Work.id))) or 0) + 1
    tag_total = like_total = 0
    for start in range(0, works, CHUNK):
        work_rows, tag_rows, like_rows, search_rows = [], [], [], []
        for offset in range(start, min(works, start + CHUNK)):
            work_id = first_id + offset
            user = rng.randrange(users)
            subject, style, mood = rng.choice(SUBJECTS), rng.choice(STYLES), rng.choice(MOODS)
            prompt = f"{subject}, {style}, {mood}, highly detailed"
            title = f"{subject} {mood}"[:100]
            description = f"{style} study of {subject}" if rng.random() < 0.5 else ""
            tags = list(dict.fromkeys(rng.sample(TAGS, rng.randint(0, 3))))
            created = now - timedelta(seconds=rng.randrange(365 * 86_400))
            liked = counts[offset]
            model = rng.choice(MODELS)
            work_rows.append({
                "id": work_id, "user_id": first_user_id + user, "author_username": f"demo_{user:05d}",
                "output_id": f"demo-{work_id}", "job_id": f"demo-job-{work_id}", "title": title,
                "description": description, "tags": tags, "is_public": True, "listed": True, "is_hidden": False,
                "image_key": _key("works/images", f"{seed}-{work_id}", "png"),
                "thumbnail_key": _key("works/thumbs", f"{seed}-{work_id}", "webp"),
                "width": 512, "height": 768, "file_size": 400_000, "sha256": hashlib.sha256(str(work_id).encode())
                .hexdigest(), "workflow": "text2img", "workflow_version": "1", "model": model,
                "params": {"prompt": prompt, "negativePrompt": "blurry", "model": model, "width": 512, "height": 768,
                           "batchSize": 1, "steps": 20, "cfgScale": 7.0, "seed": rng.randrange(2**32),
                           "sampler": "euler", "scheduler": "normal"},
                "prompt": prompt, "search_text": search_text(title, description, prompt, tags),
                "likes_count": liked, "views_count": liked * rng.randint(3, 20) + rng.randint(0, 50),
                "downloads_count": liked // 4, "hot_score": hot_score(liked, created),
                "created_at": created, "updated_at": created})
            tag_rows.extend({"work_id": work_id, "tag": tag.casefold()} for tag in tags)
            search_rows.extend(term_rows(work_id, title, description, prompt, tags))
            like_rows.extend({"work_id": work_id, "user_id": first_user_id + liker, "created_at": created}
                             for liker in rng.sample(range(users), liked))
        with db.transaction() as session:
            session.execute(insert(Work), work_rows)
            if tag_rows:
                session.execute(insert(WorkTag), tag_rows)
            for index in range(0, len(search_rows), 20_000):
                session.execute(insert(WorkTerm), search_rows[index:index + 20_000])
            for index in range(0, len(like_rows), 20_000):
                session.execute(insert(WorkLike), like_rows[index:index + 20_000])
        tag_total += len(tag_rows)
        like_total += len(like_rows)
        echo(f"  {start + len(work_rows)}/{works} works, {like_total} likes ({time.monotonic() - started:.0f} s)")
    return {"works": works, "tags": tag_total, "likes": like_total, "seconds": time.monotonic() - started}
