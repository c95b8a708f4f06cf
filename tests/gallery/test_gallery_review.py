"""Publishing review: who sees a work waiting for review (author, other user, anonymous,
moderator, the public listing, unsigned media, the edge cache's generation), the moderators'
queue with approve and reject (bulk), refusals of blocked text, and an audit row per decision."""
from __future__ import annotations

from dataclasses import replace

import pytest

from services.gallery.app import create_app
from services.gallery.config import load_config
from services.gateway.client import generation_key
from services.safety.app import create_app as create_safety_app
from tests.safety_fixtures import add_term, audit_rows
from tests.gallery.conftest import close_app


@pytest.fixture(params=["flagged-only"])
def mode(request) -> str:
    return request.param


@pytest.fixture
def app(settings, mode):
    app = create_app(settings, replace(load_config(settings), review_mode=mode))
    app.extensions["gallery"].works.review.filter.refresh_seconds = 0
    yield app
    close_app(app)


@pytest.fixture
def safety(settings):
    app = create_safety_app(settings)
    yield app
    app.extensions["db"].dispose()


@pytest.fixture
def listed(safety):
    """Add a made-up term (unique to the test) to the list; returns it."""

    def _add(severity: str, category: str = "ads") -> str:
        return add_term(safety, severity, category, "r")

    return _add



def visibility(work_id: int, author, other, anonymous, moderator) -> dict[str, int]:
    return {name: caller.get(f"/api/works/{work_id}").status_code
            for name, caller in (("author", author), ("other", other), ("anonymous", anonymous),
                                 ("moderator", moderator))}


def in_gallery(caller, work_id: int) -> bool:
    answer = caller.get("/api/works/gallery", query_string={"pageSize": 48}).get_json()
    assert answer["success"], answer
    items = answer["data"]["items"]
    return work_id in [item["id"] for item in items]


def media_public(anonymous, work) -> bool:
    key = work["thumbnailUrl"].split("/media/", 1)[1].split("?", 1)[0]
    return anonymous.get(f"/internal/media/{key}/access").get_json()["data"]["public"]


def in_queue(moderator, work_id: int, state: str = "pending") -> bool:
    data = moderator.get("/api/admin/works/review", query_string={"state": state, "pageSize": 48}).get_json()["data"]
    return work_id in [item["id"] for item in data["items"]]


def test_a_flagged_work_waits_for_review_and_only_its_author_and_moderators_see_it(
        app, make_user, anonymous, save_work, listed, safety, settings):
    author, other, moderator = make_user(), make_user(), make_user("admin")
    term = listed("review")
    redis = app.extensions["redis"]
    generation = int(redis.get(generation_key(settings.edge_cache_namespace)) or 0)
    work = save_work(author, isPublic=True, description=f"联系我 {term}")
    assert work["reviewState"] == "pending" and work["isPublic"] is True
    assert visibility(work["id"], author, other, anonymous, moderator) == {
        "author": 200, "other": 404, "anonymous": 404, "moderator": 200}
    assert author.get(f"/api/works/{work['id']}").get_json()["data"]["work"]["reviewState"] == "pending"
    assert not in_gallery(anonymous, work["id"]) and not in_gallery(other, work["id"])
    assert not media_public(anonymous, work)
    assert in_queue(moderator, work["id"])
    [queued] = [i for i in moderator.get("/api/admin/works/review").get_json()["data"]["items"] if i["id"] == work["id"]]
    assert queued["reviewCategories"] == ["ads"] and queued["listed"] is False

    decided = moderator.post("/api/admin/works/review", json={"ids": [work["id"]], "action": "approve"})
    assert decided.status_code == 200, decided.get_json()
    assert int(redis.get(generation_key(settings.edge_cache_namespace)) or 0) > generation  # cached pages retired
    assert visibility(work["id"], author, other, anonymous, moderator) == {
        "author": 200, "other": 200, "anonymous": 200, "moderator": 200}
    assert in_gallery(anonymous, work["id"]) and media_public(anonymous, work) and not in_queue(moderator, work["id"])
    [row] = audit_rows(safety, action="review_approved", subject=f"work:{work['id']}")
    assert (row["actorId"], row["category"], row["source"]) == (moderator.user_id, "ads", "gallery.review")


def test_a_flagged_prompt_sends_the_work_to_review(app, make_user, anonymous, save_work, listed):
    author = make_user()
    term = listed("review", "sexual")
    work = save_work(author, isPublic=True, prompt=f"portrait {term}")
    assert work["reviewState"] == "pending" and not in_gallery(anonymous, work["id"])


def test_rejection_needs_a_reason_keeps_the_work_unlisted_and_tells_the_author(
        app, make_user, anonymous, save_work, listed, safety):
    author, moderator = make_user(), make_user("admin")
    term = listed("review")
    works = [save_work(author, isPublic=True, title=f"{term} {i}") for i in range(3)]
    ids = [w["id"] for w in works]
    no_reason = moderator.post("/api/admin/works/review", json={"ids": ids, "action": "reject"})
    assert no_reason.status_code == 422
    rejected = moderator.post("/api/admin/works/review", json={"ids": ids, "action": "reject", "reason": "广告引流"})
    assert rejected.status_code == 200
    for work_id in ids:
        mine = author.get(f"/api/works/{work_id}").get_json()["data"]["work"]
        assert (mine["reviewState"], mine["reviewReason"]) == ("rejected", "广告引流")
        assert anonymous.get(f"/api/works/{work_id}").status_code == 404
        assert in_queue(moderator, work_id, "rejected")
    notes = author.get("/api/notifications").get_json()["data"]["items"]
    assert sum(n["type"] == "work.rejected" for n in notes) == 3
    rows = audit_rows(safety, action="review_rejected", actor_id=moderator.user_id)
    assert sorted(r["subject"] for r in rows) == sorted(f"work:{i}" for i in ids)
    assert all(r["detail"]["reason"] == "广告引流" for r in rows)
    missing = moderator.post("/api/admin/works/review", json={"ids": [ids[0], 2**31 - 2], "action": "approve"})
    assert missing.status_code == 404
    assert author.get(f"/api/works/{ids[0]}").get_json()["data"]["work"]["reviewState"] == "rejected"  # all or nothing


def test_a_clean_work_is_listed_at_once_in_flagged_only_mode(app, make_user, anonymous, save_work):
    work = save_work(make_user(), isPublic=True, title="A quiet harbour")
    assert work["reviewState"] == "none" and in_gallery(anonymous, work["id"])


def test_blocked_text_in_title_tags_or_report_is_refused(app, make_user, save_work, listed, add_output, safety):
    author, reporter = make_user(), make_user()
    term = listed("block", "gambling")
    refused = author.post("/api/works/save", json={"outputId": add_output(author.user_id), "title": f"来 {term}"},
                          headers={**author.headers, "Accept-Language": "en"})
    assert refused.status_code == 422 and refused.get_json()["error"]["code"] == "CONTENT_REJECTED"
    assert refused.get_json()["error"]["details"]["field"] == "title" and "gambling" in refused.get_json()["error"]["message"]
    work = save_work(author, isPublic=True)
    tagged = author.put(f"/api/works/{work['id']}", json={"tags": ["风景", term]})
    assert tagged.status_code == 422 and tagged.get_json()["error"]["details"]["field"] == "tags"
    assert author.get(f"/api/works/{work['id']}").get_json()["data"]["work"]["tags"] == []
    report = reporter.post(f"/api/works/{work['id']}/report", json={"reason": f"他在卖{term}"})
    assert report.status_code == 422
    sources = {r["source"] for r in audit_rows(safety, action="blocked", q=term)}
    assert sources == {"gallery.title", "gallery.tags", "gallery.report.reason"}


@pytest.mark.parametrize("mode", ["all"], indirect=True)
def test_mode_all_reviews_every_work_and_again_after_an_edit(app, make_user, anonymous, save_work, settings):
    author, moderator = make_user(), make_user("admin")
    redis = app.extensions["redis"]
    private = save_work(author, isPublic=False, title="Draft")
    assert private["reviewState"] == "none"  # private works are not reviewed until published
    work = save_work(author, isPublic=True, title="Harbour")
    assert work["reviewState"] == "pending" and not in_gallery(anonymous, work["id"])
    moderator.post("/api/admin/works/review", json={"ids": [work["id"]], "action": "approve"})
    assert in_gallery(anonymous, work["id"])
    generation = int(redis.get(generation_key(settings.edge_cache_namespace)) or 0)
    edited = author.put(f"/api/works/{work['id']}", json={"title": "Harbour at night"}).get_json()["data"]["work"]
    assert edited["reviewState"] == "pending" and anonymous.get(f"/api/works/{work['id']}").status_code == 404
    assert not in_gallery(anonymous, work["id"])
    assert int(redis.get(generation_key(settings.edge_cache_namespace)) or 0) > generation  # cached pages retired
    published = author.put(f"/api/works/{private['id']}", json={"isPublic": True}).get_json()["data"]["work"]
    assert published["reviewState"] == "pending"


@pytest.mark.parametrize("mode", ["off"], indirect=True)
def test_mode_off_lists_flagged_works_and_only_records_the_flag(app, make_user, anonymous, save_work, listed, safety):
    term = listed("review")
    work = save_work(make_user(), isPublic=True, description=term)
    assert work["reviewState"] == "none" and in_gallery(anonymous, work["id"])
    assert [r["source"] for r in audit_rows(safety, action="flagged", q=term)] == ["gallery.description"]
