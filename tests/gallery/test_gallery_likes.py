"""Likes: PUT like, DELETE unlike (both idempotent), POST toggle; the counter never drifts."""
from __future__ import annotations

import threading
import uuid

from sqlalchemy import func, select

from services.gallery.models import Work, WorkLike


def _stored_counts(app, work_id: int) -> tuple[int, int]:
    """(likes_count column, number of like rows) straight from the database."""
    with app.extensions["db"].transaction() as session:
        counter = session.scalar(select(Work.likes_count).where(Work.id == work_id))
        rows = session.scalar(select(func.count()).select_from(WorkLike).where(WorkLike.work_id == work_id))
    return counter, rows


def _state(response) -> dict:
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]


def test_like_and_unlike_are_idempotent(make_user, save_work, app):
    alice, bob = make_user(), make_user()
    work = save_work(alice)
    path = f"/api/works/{work['id']}/like"

    assert _state(bob.put(path)) == {"workId": work["id"], "likes": 1, "isLiked": True}
    assert _state(bob.put(path)) == {"workId": work["id"], "likes": 1, "isLiked": True}
    assert bob.get(f"/api/works/{work['id']}").get_json()["data"]["work"]["isLiked"] is True
    assert alice.get(f"/api/works/{work['id']}").get_json()["data"]["work"]["isLiked"] is False

    assert _state(bob.delete(path)) == {"workId": work["id"], "likes": 0, "isLiked": False}
    assert _state(bob.delete(path)) == {"workId": work["id"], "likes": 0, "isLiked": False}
    assert _stored_counts(app, work["id"]) == (0, 0)


def test_toggle_likes_then_unlikes(make_user, save_work, app):
    work = save_work(make_user())
    bob = make_user()
    path = f"/api/works/{work['id']}/like"

    assert _state(bob.post(path)) == {"workId": work["id"], "likes": 1, "isLiked": True}
    assert _state(bob.post(path)) == {"workId": work["id"], "likes": 0, "isLiked": False}
    assert _state(bob.post(path))["likes"] == 1
    assert _stored_counts(app, work["id"]) == (1, 1)


def test_gallery_shows_is_liked_for_the_viewer(make_user, save_work, anonymous):
    marker = uuid.uuid4().hex[:10]
    work = save_work(make_user(), title=f"liked {marker}")
    bob = make_user()
    bob.put(f"/api/works/{work['id']}/like")

    def item(caller):
        [only] = caller.get(f"/api/works/gallery?search={marker}").get_json()["data"]["items"]
        return only

    assert (item(bob)["isLiked"], item(bob)["likes"]) == (True, 1)
    assert item(anonymous)["isLiked"] is False


def test_liking_needs_a_user_and_a_visible_work(make_user, save_work, anonymous):
    alice, bob = make_user(), make_user()
    private = save_work(alice, isPublic=False)

    assert anonymous.put(f"/api/works/{private['id']}/like").status_code == 401
    for method in ("PUT", "DELETE", "POST"):
        response = bob.request(method, f"/api/works/{private['id']}/like")
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "WORK_NOT_FOUND"
    assert bob.put("/api/works/2147483000/like").status_code == 404
    assert _state(alice.put(f"/api/works/{private['id']}/like"))["likes"] == 1


def _concurrently(calls) -> list:
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(index, call):
        barrier.wait()
        results[index] = call()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_concurrent_likes_by_one_user_count_once(make_user, save_work, app):
    work = save_work(make_user())
    bob = make_user()
    path = f"/api/works/{work['id']}/like"

    responses = _concurrently([lambda: bob.put(path) for _ in range(10)])

    assert [r.status_code for r in responses] == [200] * 10
    assert all(r.get_json()["data"]["isLiked"] for r in responses)
    assert _stored_counts(app, work["id"]) == (1, 1)


def test_concurrent_likes_by_many_users_all_count(make_user, save_work, app):
    work = save_work(make_user())
    users = [make_user() for _ in range(10)]
    path = f"/api/works/{work['id']}/like"

    responses = _concurrently([lambda user=user: user.put(path) for user in users])

    assert [r.status_code for r in responses] == [200] * 10
    assert sorted(r.get_json()["data"]["likes"] for r in responses) == list(range(1, 11))
    assert _stored_counts(app, work["id"]) == (10, 10)


def test_concurrent_toggles_keep_counter_equal_to_rows(make_user, save_work, app):
    work = save_work(make_user())
    bob, carol = make_user(), make_user()
    path = f"/api/works/{work['id']}/like"

    responses = _concurrently([lambda user=user: user.post(path) for user in [bob] * 5 + [carol] * 4])

    assert [r.status_code for r in responses] == [200] * 9
    assert _stored_counts(app, work["id"]) == (1, 1)  # bob toggled 5 times (liked), carol 4 (not)
