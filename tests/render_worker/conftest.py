"""A render worker's context on the test emulator, real credits and Redis; a user with credits;
the user's live events."""
from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from services.render_worker.pipeline import build_context
from shared.events import redis_client, redis_db, user_channel


@pytest.fixture
def ctx(render_settings, render_config):
    context = build_context(render_settings, replace(render_config, comfyui_retry_seconds=1.0), "render@test")
    yield context
    context.comfyui.close()
    context.credits.close()
    context.db.dispose()


@pytest.fixture
def user_id(ctx) -> int:
    user = random.randint(10**6, 10**9)
    assert ctx.credits.open_account(user) == {"available": 500, "held": 0}
    return user


@pytest.fixture
def channel(render_settings, user_id):
    """Collects the user's live events (subscribed before the job runs)."""
    client = redis_client(render_settings.redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(user_channel(user_id, redis_db(client)))
    pubsub.get_message(timeout=1)

    def drain() -> list[dict]:
        events = []
        while (message := pubsub.get_message(timeout=0.5)) is not None:
            events.append(json.loads(message["data"]))
        return events

    yield drain
    pubsub.close()
