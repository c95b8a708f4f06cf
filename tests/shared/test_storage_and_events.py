import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from redis._parsers import _HiredisParser

from shared.events import PLATFORM_STREAM, EventBus, GroupConsumer, RetryLater, announce, redis_client
from shared.storage import LocalStorage, content_key
from tests.conftest import listen_live


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
    listener = listen_live(redis_url, user_id)
    assert next(listener) is None  # subscribed, nothing yet
    first = bus.publish(user_id, "job.progress", {"jobId": unique, "step": 1}, job_id=unique)
    bus.publish(user_id + 1, "job.progress", {"jobId": "someone else"})
    second = bus.publish(user_id, "job.progress", {"jobId": unique, "step": 2, "note": {"text": "}ü\"{", "list": []}},
                         job_id=unique)
    received = [event for event in (next(listener) for _ in range(5)) if event]
    listener.close()
    assert received == [first, second], "the live text is the event as published, with its stream id"
    replay = bus.job_events_after(unique, first["id"])
    assert [event["id"] for event in replay] == [second["id"]]
    assert [event["data"]["step"] for event in bus.job_events_after(unique)] == [1, 2]
    json.dumps(received)


def test_clients_parse_with_hiredis_and_answer_text(redis_url, unique):
    """The platform's clients use hiredis's parser (C) on RESP3 and still answer str, dicts and
    pub/sub messages as redis-py's Python parser does."""
    client = redis_client(redis_url)
    client.hset(f"test:{unique}", mapping={"a": "1", "é": "ü"})
    assert client.hgetall(f"test:{unique}") == {"a": "1", "é": "ü"}
    connection = client.connection_pool.get_connection()
    assert isinstance(connection._parser, _HiredisParser) and connection.protocol == 3
    client.connection_pool.release(connection)
    pubsub = client.pubsub()
    pubsub.subscribe(f"test:{unique}:channel")
    assert pubsub.get_message(timeout=1)["type"] == "subscribe"
    client.publish(f"test:{unique}:channel", "ünïcode")
    message = pubsub.get_message(timeout=1)
    assert (message["type"], message["channel"], message["data"]) == ("message", f"test:{unique}:channel", "ünïcode")
    pubsub.close()
    client.delete(f"test:{unique}")


def test_under_gevent_clients_parse_in_python(redis_url):
    """The gateway's gevent workers keep redis-py's Python parser (hiredis's readiness polls cost
    more there) and still talk to Redis."""
    script = ("from gevent import monkey; monkey.patch_all()\n"
              "import sys; from shared.events import redis_client\n"
              "client = redis_client(sys.argv[1]); assert client.ping()\n"
              "connection = client.connection_pool.get_connection()\n"
              "print(type(connection._parser).__name__)")
    result = subprocess.run([sys.executable, "-c", script, redis_url], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.stdout.strip() == "_RESP3Parser", result.stderr


def test_a_users_live_events_stay_in_their_redis_database(redis_url, unique):
    """Pub/sub is server-wide: a deployment in another database of the same server, with a user
    of the same id, hears nothing of this one's events."""
    here = EventBus(redis_client(redis_url))
    elsewhere_url = redis_url.rsplit("/", 1)[0] + f"/{(here.db + 1) % 16}"
    elsewhere = EventBus(redis_client(elsewhere_url))
    user_id = int(unique, 16) % 1_000_000
    listener = listen_live(elsewhere_url, user_id)
    assert next(listener) is None  # subscribed
    here.publish(user_id, "credits.changed", {"available": 1})
    elsewhere.publish(user_id, "credits.changed", {"available": 2})
    received = [event for event in (next(listener) for _ in range(4)) if event]
    listener.close()
    assert [event["data"]["available"] for event in received] == [2]


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


def test_announcements_are_flat_string_entries_on_the_platform_stream(redis_url, unique):
    client = redis_client(redis_url)
    entry_id = announce(client, "test.announced", userId=unique)
    [(found_id, fields)] = client.xrange(PLATFORM_STREAM, min=entry_id, max=entry_id)
    assert found_id == entry_id
    assert fields["type"] == "test.announced" and fields["userId"] == unique
    assert fields["ts"].endswith("Z") and fields["ts"][:2] == "20"


def test_a_group_consumer_acks_only_what_it_handled(redis_url, unique):
    """A failing handler leaves its entry pending for the next pass; an entry abandoned by
    a consumer that went away is taken over once idle; a trimmed entry is dropped."""
    client, stream = redis_client(redis_url), f"test:stream:{unique}"
    seen: list[str] = []
    failures = {"n": 1}

    def handle(fields):
        if failures["n"]:
            failures["n"] -= 1
            raise RuntimeError("database down")
        seen.append(fields["n"])

    first = GroupConsumer(client, "g", "first", handle, stream)
    first.ensure_group()
    first.ensure_group()  # idempotent
    client.xadd(stream, {"n": "1"})
    client.xadd(stream, {"n": "2"})
    with pytest.raises(RuntimeError):
        first.consume_once(block_ms=10)
    assert client.xpending(stream, "g")["pending"] == 2
    assert first.consume_once(block_ms=10) == 2 and seen == ["1", "2"]

    client.xadd(stream, {"n": "3"})
    client.xreadgroup("g", "gone", {stream: ">"})  # delivered to a consumer that then died
    later = GroupConsumer(client, "g", "later", handle, stream, claim_idle_ms=50)
    assert later.consume_once(block_ms=10) == 0  # not idle long enough yet
    time.sleep(0.06)
    assert later.consume_once(block_ms=10) == 1 and seen == ["1", "2", "3"]

    trimmed = client.xadd(stream, {"n": "4"})
    client.xreadgroup("g", "later", {stream: ">"})
    client.xdel(stream, trimmed)
    time.sleep(0.06)
    later.consume_once(block_ms=10)  # dropped (by XAUTOCLAIM on Redis 7, once idle), never handled
    assert seen == ["1", "2", "3"] and client.xpending(stream, "g")["pending"] == 0

    stop = threading.Event()
    runner = threading.Thread(target=later.run, args=(stop,))
    runner.start()
    client.xadd(stream, {"n": "5"})
    deadline = time.monotonic() + 5
    while seen[-1] != "5" and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    runner.join(timeout=10)
    assert not runner.is_alive() and seen[-1] == "5"


def test_pending_entries_are_handled_after_a_restart_and_beyond_one_read(redis_url, unique):
    """A consumer that comes back under its name (same host and pid) handles what it left
    pending at its first pass, and entries left pending by a failure are all handled, also
    when there are more than one read takes."""
    client, stream = redis_client(redis_url), f"test:stream:{unique}"
    seen: list[str] = []
    down = {"database": True}

    def handle(fields):
        if down["database"]:
            raise RuntimeError("database down")
        seen.append(fields["n"])

    before = GroupConsumer(client, "g", "host-1", handle, stream, batch=2)
    before.ensure_group()
    for n in range(5):
        client.xadd(stream, {"n": str(n)})
    with pytest.raises(RuntimeError):
        before.consume_once(block_ms=10)
    assert client.xpending(stream, "g")["pending"] == 2  # one read of two, none handled

    restarted = GroupConsumer(client, "g", "host-1", handle, stream, batch=2)
    down["database"] = False
    passes = 0
    while len(seen) < 5 and passes < 10:
        restarted.consume_once(block_ms=10)
        passes += 1
    assert seen == ["0", "1", "2", "3", "4"] and client.xpending(stream, "g")["pending"] == 0

    client.xadd(stream, {"n": "5"})
    assert restarted.consume_once(block_ms=10) == 1 and seen[-1] == "5"
    assert client.xpending(stream, "g")["pending"] == 0


def test_an_entry_that_must_wait_is_handled_again_by_the_running_consumer(redis_url, unique, caplog):
    """``RetryLater`` (a job still running, say) leaves the entry pending without an error log;
    the consumer handles it again on its next pass."""
    client, stream = redis_client(redis_url), f"test:stream:{unique}"
    attempts: list[str] = []
    done = threading.Event()

    def handle(fields):
        attempts.append(fields["n"])
        if len(attempts) < 3:
            raise RetryLater("the user's job is still running")
        done.set()

    consumer = GroupConsumer(client, "g", "patient", handle, stream)
    consumer.ensure_group()
    client.xadd(stream, {"n": "1"})
    stop = threading.Event()
    runner = threading.Thread(target=consumer.run, args=(stop, 0.05), daemon=True)
    runner.start()
    try:
        assert done.wait(30), attempts
    finally:
        stop.set()
        runner.join(30)
    assert attempts == ["1", "1", "1"] and client.xpending(stream, "g")["pending"] == 0
    assert not [record for record in caplog.records if record.levelname == "ERROR"]
