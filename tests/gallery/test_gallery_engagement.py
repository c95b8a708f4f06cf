"""Views, downloads, reports, moderation and the notifications they raise."""
from __future__ import annotations

import io
import threading
from datetime import timedelta
from urllib.parse import quote, urlsplit

from PIL import Image
from sqlalchemy import func, select, update

from services.gallery.models import Work, WorkHit
from shared.db import utcnow


def _view(caller, work_id, **headers):
    response = caller.post(f"/api/works/{work_id}/view", headers={**caller.headers, **headers})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]


def _age_hits(app, work_id: int, minutes: int) -> None:
    with app.extensions["db"].transaction() as session:
        session.execute(update(WorkHit).where(WorkHit.work_id == work_id)
                        .values(counted_at=utcnow() - timedelta(minutes=minutes)))


def test_views_count_once_per_viewer_per_window(make_user, save_work, anonymous, app):
    alice, bob = make_user(), make_user()
    work = save_work(alice)
    wid = work["id"]

    assert _view(alice, wid) == {"workId": wid, "views": 0, "counted": False, "reason": "owner"}
    assert _view(bob, wid)["counted"] is True
    assert _view(bob, wid) == {"workId": wid, "views": 1, "counted": False, "reason": "recently_counted"}
    one = {"X-Real-IP": "203.0.113.5", "User-Agent": "Firefox"}
    assert _view(anonymous, wid, **one)["counted"] is True
    assert _view(anonymous, wid, **one)["counted"] is False
    assert _view(anonymous, wid, **{**one, "User-Agent": "Safari"})["counted"] is True
    assert _view(anonymous, wid, **{**one, "X-Real-IP": "203.0.113.6"})["views"] == 4

    _age_hits(app, wid, 29)
    assert _view(bob, wid)["counted"] is False
    _age_hits(app, wid, 31)
    assert _view(bob, wid) == {"workId": wid, "views": 5, "counted": True, "reason": None}
    assert anonymous.get(f"/api/works/{wid}").get_json()["data"]["work"]["views"] == 5


def test_concurrent_views_of_one_viewer_count_once(make_user, save_work, app):
    work = save_work(make_user())
    bob = make_user()
    barrier = threading.Barrier(8)
    results = []

    def view():
        barrier.wait()
        results.append(bob.post(f"/api/works/{work['id']}/view").status_code)

    threads = [threading.Thread(target=view) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [200] * 8
    with app.extensions["db"].read() as session:
        assert session.scalar(select(Work.views_count).where(Work.id == work["id"])) == 1


def test_views_of_private_missing_or_deleted_works_are_404(make_user, save_work, anonymous):
    alice, bob = make_user(), make_user()
    private = save_work(alice, isPublic=False)
    gone = save_work(alice)
    alice.delete(f"/api/works/{gone['id']}")
    for work_id in (private["id"], gone["id"], 2147483000):
        assert bob.post(f"/api/works/{work_id}/view").status_code == 404
        assert anonymous.post(f"/api/works/{work_id}/view").status_code == 404


def test_download_gives_the_original_named_after_the_title(make_user, save_work, fake_gateway, app, anonymous):
    alice, bob = make_user(), make_user()
    work = save_work(alice, title="夜晚的/城市: 1")
    original = app.extensions["gallery"].files.storage.read(fake_gateway.outputs[work["outputId"]]["imageKey"])

    response = bob.get(f"/api/works/{work['id']}/download")

    assert response.status_code == 200
    with Image.open(io.BytesIO(response.data)) as image, Image.open(io.BytesIO(original)) as stored:
        assert image.size == stored.size  # the original, with the visible label (test_gallery_labels.py)
    assert response.mimetype == "image/png"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="')
    assert f"filename*=UTF-8''{quote('夜晚的城市 1.png', safe='')}" in disposition
    bob.get(f"/api/works/{work['id']}/download")
    anonymous.get(f"/api/works/{work['id']}/download")
    alice.get(f"/api/works/{work['id']}/download")  # the owner's own downloads do not count
    assert alice.get(f"/api/works/{work['id']}").get_json()["data"]["work"]["downloads"] == 2


def test_private_work_downloads_only_for_the_owner(make_user, save_work, anonymous):
    alice, bob = make_user(), make_user()
    private = save_work(alice, isPublic=False, title="plain")
    assert alice.get(f"/api/works/{private['id']}/download").status_code == 200
    assert 'filename="plain.png"' in alice.get(f"/api/works/{private['id']}/download").headers["Content-Disposition"]
    assert bob.get(f"/api/works/{private['id']}/download").status_code == 404
    assert anonymous.get(f"/api/works/{private['id']}/download").status_code == 404


def test_reports_and_admin_moderation(make_user, save_work, anonymous):
    alice, bob, admin = make_user(), make_user(), make_user("admin")
    work = save_work(alice, title="questionable")
    wid = work["id"]

    assert bob.post(f"/api/works/{wid}/report", json={"reason": "spam"}).status_code == 201
    assert bob.post(f"/api/works/{wid}/report", json={"reason": "again"}).status_code == 409
    assert alice.post(f"/api/works/{wid}/report", json={"reason": "me"}).status_code == 403
    assert bob.post(f"/api/works/{wid}/report", json={"reason": ""}).status_code == 422
    assert anonymous.post(f"/api/works/{wid}/report", json={"reason": "x"}).status_code == 401

    assert bob.get("/api/admin/works/reports").status_code == 403
    reports = admin.get("/api/admin/works/reports").get_json()["data"]["items"]
    mine = [r for r in reports if r["workId"] == wid]
    assert mine and mine[0]["reason"] == "spam" and mine[0]["work"]["title"] == "questionable"
    # The moderator sees the picture reported, at its shape.
    summary = mine[0]["work"]
    assert urlsplit(summary["thumbnailUrl"]).path == urlsplit(work["thumbnailUrl"]).path
    assert (summary["width"], summary["height"]) == (work["width"], work["height"])

    hidden = admin.post(f"/api/admin/works/{wid}/hide", json={"reason": "Spam links"})
    assert hidden.status_code == 200
    assert bob.post(f"/api/admin/works/{wid}/hide", json={"reason": "x"}).status_code == 403
    assert anonymous.get(f"/api/works/{wid}").status_code == 404
    assert bob.put(f"/api/works/{wid}/like").status_code == 404
    own = alice.get(f"/api/works/{wid}").get_json()["data"]["work"]
    assert (own["hidden"], own["hiddenReason"]) == (True, "Spam links")
    assert alice.put(f"/api/works/{wid}", json={"isPublic": True}).status_code == 200
    assert anonymous.get(f"/api/works/{wid}").status_code == 404  # publishing does not undo a hide
    resolved = admin.get("/api/admin/works/reports?status=resolved").get_json()["data"]["items"]
    assert any(r["workId"] == wid for r in resolved)

    assert admin.post(f"/api/admin/works/{wid}/restore").status_code == 200
    assert anonymous.get(f"/api/works/{wid}").status_code == 200
    featured = admin.put(f"/api/admin/works/{wid}/feature").get_json()["data"]["work"]
    assert featured["featured"] is True
    assert admin.delete(f"/api/admin/works/{wid}/feature").get_json()["data"]["work"]["featured"] is False
    assert admin.post("/api/admin/works/999999999/hide", json={"reason": "x"}).status_code == 404

    kinds = [n["type"] for n in alice.get("/api/notifications").get_json()["data"]["items"]]
    assert kinds == ["work.featured", "work.restored", "work.hidden"]


def test_featured_by_like_count(make_user, save_work, settings):
    from services.gallery.config import load_config

    assert load_config(settings, {"GALLERY_FEATURED_LIKES": "1"}).featured_likes == 1
    alice, bob = make_user(), make_user()
    work = save_work(alice)
    bob.put(f"/api/works/{work['id']}/like")
    assert alice.get(f"/api/works/{work['id']}").get_json()["data"]["work"]["featured"] is False  # default 10


def test_a_like_notifies_the_author_once(make_user, save_work, app):
    alice, bob = make_user(), make_user()
    work = save_work(alice, title="fox")
    for _ in range(3):
        bob.post(f"/api/works/{work['id']}/like")  # like, unlike, like
    alice.put(f"/api/works/{work['id']}/like")  # one's own like notifies nobody
    items = alice.get("/api/notifications").get_json()["data"]["items"]
    assert [(n["type"], n["data"]["userId"]) for n in items] == [("work.liked", bob.user_id)]
    with app.extensions["db"].read() as session:
        assert session.scalar(select(func.count()).select_from(Work).where(Work.id == work["id"])) == 1
