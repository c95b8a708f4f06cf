"""A work's counters in Redis, for the gateway's cached work details
(``EdgeCacheClient.set_counters``): written by every change the gallery counts, equal to what
the gallery itself answers, forgotten after ``EDGE_DETAIL_SECONDS``, and each change filed
under a new number in the list of counted works the gateway reads."""
from __future__ import annotations

import pytest
import redis

from services.gateway.client import counted_keys, counters_key


@pytest.fixture
def settings_env(settings_env, unique):
    return {**settings_env, "EDGE_CACHE_NAMESPACE": f"edge-test-{unique}", "EDGE_DETAIL_SECONDS": "45"}


@pytest.fixture
def stored(settings):
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)

    def _stored(work_id: int) -> dict[str, int]:
        counters = client.hgetall(counters_key(settings.edge_cache_namespace, work_id))
        return {name: int(value) for name, value in counters.items()}

    yield _stored
    client.close()


def test_each_counted_change_reaches_the_works_counters(make_user, save_work, anonymous, app, settings, stored):
    alice, bob = make_user(), make_user()
    work_id = save_work(alice)["id"]

    def answered() -> dict[str, int]:
        work = anonymous.get(f"/api/works/{work_id}").get_json()["data"]["work"]
        return {name: work[name] for name in ("likes", "views", "downloads")}

    assert stored(work_id) == answered() == {"likes": 0, "views": 0, "downloads": 0}
    client = redis.Redis.from_url(settings.redis_url)
    try:
        assert 0 < client.ttl(counters_key(settings.edge_cache_namespace, work_id)) <= 45
    finally:
        client.close()

    counted, sequence, _floor = counted_keys(settings.edge_cache_namespace)

    def filed_as() -> float:
        client = redis.Redis.from_url(settings.redis_url)
        try:
            assert client.zscore(counted, work_id) == float(client.get(sequence))  # the last change
            return client.zscore(counted, work_id)
        finally:
            client.close()

    numbers = [filed_as()]
    assert bob.put(f"/api/works/{work_id}/like").status_code == 200
    numbers.append(filed_as())
    assert bob.post(f"/api/works/{work_id}/view").status_code == 200
    numbers.append(filed_as())
    assert bob.post(f"/api/works/{work_id}/view").get_json()["data"]["counted"] is False
    assert bob.get(f"/api/works/{work_id}/download").status_code == 200
    numbers.append(filed_as())
    assert alice.get(f"/api/works/{work_id}/download").status_code == 200  # the owner's own: not counted
    assert filed_as() == numbers[-1] and numbers == sorted(set(numbers))
    assert stored(work_id) == answered() == {"likes": 1, "views": 1, "downloads": 1}

    assert bob.delete(f"/api/works/{work_id}/like").status_code == 200
    assert stored(work_id)["likes"] == answered()["likes"] == 0
    assert bob.post(f"/api/works/{work_id}/like").get_json()["data"]["isLiked"] is True  # the toggle
    assert stored(work_id)["likes"] == answered()["likes"] == 1

    app.extensions["gallery"].works.remove_user(bob.user_id)  # the account is gone, and its like
    assert stored(work_id) == answered() == {"likes": 0, "views": 1, "downloads": 1}
