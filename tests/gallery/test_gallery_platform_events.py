"""Account deletion announced on platform:events removes the user's gallery data and files."""
from __future__ import annotations

from sqlalchemy import func, select

from services.gallery import platform_events
from services.gallery.models import Notification, Work, WorkLike
from shared.events import redis_client


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
    platform_events.ensure_group(client)
    client.xadd(platform_events.STREAM, {"type": "user.created", "userId": str(alice.user_id), "ts": "x"})
    client.xadd(platform_events.STREAM, {"type": "user.deleted", "userId": str(alice.user_id), "ts": "x"})
    while platform_events.consume_once(app.extensions["gallery"].works, client, f"test-{unique}", block_ms=100):
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
    pending = client.xpending(platform_events.STREAM, platform_events.GROUP)
    assert pending["pending"] == 0
