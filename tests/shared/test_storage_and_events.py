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


def test_local_copy_links_and_survives_deleting_the_source(tmp_path):
    storage = LocalStorage(tmp_path)
    key = storage.put(content_key(b"img", "png", "images"), b"img")
    copy = storage.copy(key, "works/" + key)
    storage.delete(key)
    assert storage.read(copy) == b"img" and b"".join(storage.iter_chunks(copy)) == b"img"
    with pytest.raises(FileNotFoundError):
        storage.copy(key, "works/x/" + key)


def test_signed_urls_expire_and_bind_the_key(tmp_path):
    from shared.storage import MediaSigner, SignatureExpired, SignatureInvalid

    signer = MediaSigner(b"secret", ttl_seconds=600)
    storage = LocalStorage(tmp_path, signer=signer)
    key = content_key(b"a", "png", "images")
    expires, signature = signer.sign(key, now=1_000_000)
    assert storage.signed_url(key, now=1_000_000) == f"/media/{key}?exp={expires}&sig={signature}"
    assert 600 <= expires - 1_000_000 <= 1200
    assert signer.verify(key, str(expires), signature, now=1_000_000) == expires - 1_000_000
    with pytest.raises(SignatureExpired):
        signer.verify(key, str(expires), signature, now=expires)
    with pytest.raises(SignatureInvalid):
        signer.verify(content_key(b"b", "png", "images"), str(expires), signature, now=1_000_000)
    with pytest.raises(SignatureInvalid):
        MediaSigner(b"other").verify(key, str(expires), signature, now=1_000_000)
    with pytest.raises(SignatureInvalid):
        signer.verify(key, "soon", signature, now=1_000_000)


def test_remove_unreferenced_keeps_keys_still_in_use(tmp_path):
    from shared.storage import remove_unreferenced

    storage = LocalStorage(tmp_path)
    used, unused = (storage.put(content_key(data, "png", "images"), data) for data in (b"1", b"2"))
    assert remove_unreferenced(storage, [used, unused, unused], lambda keys: {used}) == [unused]
    assert storage.exists(used) and not storage.exists(unused)


def test_storage_configuration(settings):
    from shared.config import ConfigError
    from shared.storage import load_storage_config, make_storage

    assert isinstance(make_storage(settings, {}), LocalStorage)
    for env in ({"STORAGE_BACKEND": "ftp"}, {"STORAGE_BACKEND": "s3"}, {"MEDIA_URL_TTL_SECONDS": "10"}):
        with pytest.raises(ConfigError):
            load_storage_config(settings, env)
    assert load_storage_config(settings, {}).signing_secret != settings.service_token
