"""Account deletion announced on platform:events removes the user's gallery data and files."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from sqlalchemy import func, select

from services.gallery import events
from services.gallery.models import Notification, Work, WorkLike
from shared.config import PROJECT_ROOT
from shared.events import PLATFORM_STREAM, GroupConsumer, announce_user_deleted, redis_client


def test_user_deleted_removes_works_likes_notifications_and_files(
        make_user, save_work, fake_gateway, app, redis_url, unique):
    alice, bob = make_user(), make_user()
    gone = save_work(alice, title="to be erased")
    liked = save_work(bob)
    alice.put(f"/api/works/{liked['id']}/like")
    bob.put(f"/api/works/{gone['id']}/like")  # notifies alice
    image_key = "works/" + fake_gateway.outputs[gone["outputId"]]["imageKey"]
    storage = app.extensions["gallery"].files.storage
    assert storage.exists(image_key)

    client = redis_client(redis_url)
    consumer = GroupConsumer(client, events.GROUP, f"test-{unique}", events.handler(app.extensions["gallery"].works))
    consumer.ensure_group()
    client.xadd(PLATFORM_STREAM, {"type": "user.created", "userId": str(alice.user_id), "ts": "x"})
    client.xadd(PLATFORM_STREAM, {"type": "user.deleted", "userId": str(alice.user_id), "ts": "x"})
    while consumer.consume_once(block_ms=100):
        pass

    with app.extensions["db"].read() as session:
        assert session.scalar(select(func.count()).select_from(Work).where(Work.user_id == alice.user_id)) == 0
        assert session.scalar(select(func.count()).select_from(WorkLike)
                              .where(WorkLike.user_id == alice.user_id)) == 0
        assert session.scalar(select(func.count()).select_from(Notification)
                              .where(Notification.user_id == alice.user_id)) == 0
        assert session.scalar(select(Work.likes_count).where(Work.id == liked["id"])) == 0
    assert not storage.exists(image_key)
    assert bob.get(f"/api/works/{liked['id']}").status_code == 200
    pending = client.xpending(PLATFORM_STREAM, events.GROUP)
    assert pending["pending"] == 0


def test_the_events_module_runs_as_a_process(make_user, save_work, fake_gateway, app, settings_env, redis_url):
    """``python -m services.gallery.events`` (what deploy/local.py starts) applies a user.deleted."""
    alice = make_user()
    work = save_work(alice)
    image_key = "works/" + fake_gateway.outputs[work["outputId"]]["imageKey"]
    storage = app.extensions["gallery"].files.storage
    proc = subprocess.Popen([sys.executable, "-m", "services.gallery.events"], cwd=PROJECT_ROOT,
                            env={**os.environ, **settings_env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        announce_user_deleted(redis_client(redis_url), alice.user_id)
        deadline = time.monotonic() + 60
        while storage.exists(image_key) or _works_of(app, alice.user_id):
            assert proc.poll() is None, "the events process exited"
            assert time.monotonic() < deadline, "the events process did not remove the user's work"
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _works_of(app, user_id: int) -> int:
    with app.extensions["db"].read() as session:
        return session.scalar(select(func.count()).select_from(Work).where(Work.user_id == user_id))
