import json

import pytest

from shared.events import EventBus, redis_client
from shared.storage import LocalStorage, content_key


def test_content_keys_are_stable_and_stored_once(tmp_path):
    storage = LocalStorage(tmp_path)
    key = content_key(b"png bytes", "png", "images")
    assert key == content_key(b"png bytes", "png", "images")
    assert key != content_key(b"other bytes", "png", "images")
    storage.put(key, b"png bytes")
    storage.put(key, b"png bytes")
    assert storage.read(key) == b"png bytes"
    assert storage.url(key) == f"/media/{key}"
    storage.delete(key)
    assert not storage.exists(key)


@pytest.mark.parametrize("key", ["../outside.png", "images/../../outside.png", "/etc/passwd"])
def test_keys_cannot_escape_the_storage_root(tmp_path, key):
    with pytest.raises(ValueError):
        LocalStorage(tmp_path / "media").put(key, b"x")


def test_user_events_are_live_and_job_events_replayable(redis_url, unique):
    bus = EventBus(redis_client(redis_url))
    user_id = int(unique, 16) % 1_000_000
    listener = bus.listen(user_id, timeout=0.2)
    assert next(listener) is None  # subscribed, nothing yet
    first = bus.publish(user_id, "job.progress", {"jobId": unique, "step": 1}, job_id=unique)
    bus.publish(user_id + 1, "job.progress", {"jobId": "someone else"})
    second = bus.publish(user_id, "job.progress", {"jobId": unique, "step": 2}, job_id=unique)
    received = [event for event in (next(listener) for _ in range(5)) if event]
    listener.close()
    assert [event["data"]["step"] for event in received] == [1, 2]
    assert received[0]["id"] == first["id"]
    replay = bus.job_events_after(unique, first["id"])
    assert [event["id"] for event in replay] == [second["id"]]
    assert [event["data"]["step"] for event in bus.job_events_after(unique)] == [1, 2]
    json.dumps(received)
