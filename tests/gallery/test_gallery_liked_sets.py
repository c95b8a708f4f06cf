"""Each user's set of liked works in Redis (``services/gallery/liked.py``), the contract the
gateway reads: true to the database after every like, unlike, deletion and rebuild, and
never missing a like that commits while it is being rebuilt."""
from __future__ import annotations

import uuid

import pytest
import redis
from sqlalchemy import select

from services.gallery.liked import LikedSets, liked_key, read_liked
from services.gallery.models import WorkLike


@pytest.fixture
def sets(app) -> LikedSets:
    return app.extensions["gallery"].engagement.liked_sets


@pytest.fixture
def store(app) -> redis.Redis:
    return app.extensions["redis"]


def _ask_gallery(caller, user_id: int, work_ids: list[int]) -> list[int]:
    """What the gateway asks when the set is missing."""
    response = caller.get(f"/internal/users/{user_id}/liked?workIds={','.join(map(str, work_ids))}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]["workIds"]


def _read_db(app, user_id: int):
    def read() -> list[int]:
        with app.extensions["db"].read() as session:
            return list(session.scalars(select(WorkLike.work_id).where(WorkLike.user_id == user_id)))
    return read


def test_the_set_follows_likes_and_unlikes(make_user, save_work, anonymous, store):
    author, fan = make_user(), make_user()
    first, second = save_work(author)["id"], save_work(author)["id"]
    assert fan.put(f"/api/works/{first}/like").status_code == 200
    assert read_liked(store, fan.user_id, [first, second]) is None  # never built: the gateway asks the gallery

    assert _ask_gallery(anonymous, fan.user_id, [first, second]) == [first]
    assert read_liked(store, fan.user_id, [first, second]) == {first}  # rebuilt by that call
    assert 0 < store.ttl(liked_key(fan.user_id)) <= 3600

    assert fan.put(f"/api/works/{second}/like").status_code == 200
    assert read_liked(store, fan.user_id, [first, second]) == {first, second}
    assert fan.delete(f"/api/works/{first}/like").status_code == 200
    assert read_liked(store, fan.user_id, [first, second]) == {second}
    assert fan.post(f"/api/works/{second}/like").status_code == 200  # toggled off
    assert read_liked(store, fan.user_id, [first, second]) == set()
    assert read_liked(store, author.user_id, [first, second]) is None  # nobody else's set appears


def test_a_lost_set_is_rebuilt_from_the_database(make_user, save_work, anonymous, store):
    author, fan = make_user(), make_user()
    work = save_work(author)["id"]
    assert fan.put(f"/api/works/{work}/like").status_code == 200
    _ask_gallery(anonymous, fan.user_id, [work])
    store.delete(liked_key(fan.user_id))  # Redis lost it (restart, eviction, expiry)

    assert read_liked(store, fan.user_id, [work]) is None
    assert fan.delete(f"/api/works/{work}/like").status_code == 200  # a change to a missing set creates none
    assert read_liked(store, fan.user_id, [work]) is None
    assert fan.put(f"/api/works/{work}/like").status_code == 200
    assert _ask_gallery(anonymous, fan.user_id, [work]) == [work]
    assert read_liked(store, fan.user_id, [work]) == {work}


def test_a_like_during_a_rebuild_is_not_lost(app, make_user, save_work, sets, store):
    author, fan = make_user(), make_user()
    work = save_work(author)["id"]
    read = _read_db(app, fan.user_id)

    # The like commits (and tells Redis) between the rebuild's read and its write: the write gives up.
    version = sets.begin_rebuild(fan.user_id)
    seen = read()
    assert fan.put(f"/api/works/{work}/like").status_code == 200
    assert sets.finish_rebuild(fan.user_id, version, seen) is False
    assert read_liked(store, fan.user_id, [work]) is None
    assert sets.rebuild(fan.user_id, read) == [work]
    assert read_liked(store, fan.user_id, [work]) == {work}

    # The unlike commits before the write but tells Redis after it: the set it finds is corrected.
    store.delete(liked_key(fan.user_id))
    version = sets.begin_rebuild(fan.user_id)
    seen = read()
    told_later = []
    original = sets._apply
    sets._apply = lambda *change: told_later.append(change)
    try:
        assert fan.delete(f"/api/works/{work}/like").status_code == 200
    finally:
        sets._apply = original
    assert sets.finish_rebuild(fan.user_id, version, seen) is True
    assert read_liked(store, fan.user_id, [work]) == {work}  # stale for the moment between the two
    [change] = told_later
    sets._apply(*change)
    assert read_liked(store, fan.user_id, [work]) == set()


def test_a_rebuild_that_started_first_gives_way_to_a_later_one(app, make_user, save_work, sets, store):
    fan = make_user()
    work = save_work(make_user())["id"]
    read = _read_db(app, fan.user_id)
    early = sets.begin_rebuild(fan.user_id)
    early_seen = read()
    assert fan.put(f"/api/works/{work}/like").status_code == 200
    assert sets.rebuild(fan.user_id, read) == [work]
    assert sets.finish_rebuild(fan.user_id, early, early_seen) is False
    assert read_liked(store, fan.user_id, [work]) == {work}


def test_deleted_works_and_accounts_leave_the_sets(app, make_user, save_work, anonymous, store):
    author, fan = make_user(), make_user()
    kept, deleted, batch = (save_work(author)["id"] for _ in range(3))
    for work in (kept, deleted, batch):
        assert fan.put(f"/api/works/{work}/like").status_code == 200
    assert author.put(f"/api/works/{kept}/like").status_code == 200
    _ask_gallery(anonymous, fan.user_id, [kept])
    _ask_gallery(anonymous, author.user_id, [kept])

    assert author.delete(f"/api/works/{deleted}").status_code == 200
    assert author.post("/api/works/batch", json={"ids": [batch], "action": "delete"}).status_code == 200
    assert read_liked(store, fan.user_id, [kept, deleted, batch]) == {kept}

    app.extensions["gallery"].works.remove_user(author.user_id)
    assert read_liked(store, fan.user_id, [kept]) == set()  # the author's works went with the account
    assert read_liked(store, author.user_id, [kept]) is None  # the author's own likes went too


def test_the_demo_seed_drops_the_sets_of_the_users_it_gives_likes(app, anonymous, store):
    user_id = uuid.uuid4().int % 1_000_000_000 + 1_000_000_000
    assert _ask_gallery(anonymous, user_id, [1]) == []
    assert read_liked(store, user_id, [1]) == set()
    result = app.test_cli_runner().invoke(args=["gallery", "seed-demo", "--works", "2", "--users", "1",
                                                "--likes", "1", "--first-user-id", str(user_id)])
    assert result.exit_code == 0, result.output
    assert read_liked(store, user_id, [1]) is None
    with app.extensions["db"].read() as session:
        seeded = list(session.scalars(select(WorkLike.work_id).where(WorkLike.user_id == user_id)))
    assert len(seeded) == 1 and _ask_gallery(anonymous, user_id, seeded) == seeded


def test_without_redis_likes_and_answers_still_work(app, make_user, save_work, anonymous, monkeypatch):
    """The like commits and the gallery answers from the database; only the set is skipped."""
    fan = make_user()
    work = save_work(make_user())["id"]
    monkeypatch.setattr(app.extensions["gallery"].engagement, "liked_sets",
                        LikedSets(redis.Redis.from_url("redis://127.0.0.1:1/0")))
    assert fan.put(f"/api/works/{work}/like").status_code == 200
    assert _ask_gallery(anonymous, fan.user_id, [work]) == [work]
    assert fan.delete(f"/api/works/{work}/like").status_code == 200
    assert _ask_gallery(anonymous, fan.user_id, [work]) == []


@pytest.mark.parametrize("work_ids", ["²", "1,٣", "0", "9223372036854775808", "1,,2", "a", ""])
def test_work_ids_that_are_not_plain_64_bit_ids_are_refused_not_a_crash(anonymous, work_ids):
    response = anonymous.get(f"/internal/users/5/liked?workIds={work_ids}")
    assert (response.status_code, response.get_json()["error"]["code"]) == (422, "VALIDATION_ERROR")


def test_a_64_bit_work_id_is_a_work_nobody_likes(make_user, save_work, anonymous):
    author, fan = make_user(), make_user()
    work = save_work(author)["id"]
    assert fan.put(f"/api/works/{work}/like").status_code == 200
    assert _ask_gallery(anonymous, fan.user_id, [work, 2**63 - 1]) == [work]
