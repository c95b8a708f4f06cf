"""Listing and reading works: the public gallery, the caller's own works, one work."""
from __future__ import annotations

import base64
import json
import uuid

import pytest


def _ids(response) -> list[int]:
    assert response.status_code == 200, response.get_json()
    return [item["id"] for item in response.get_json()["data"]["items"]]


def test_gallery_lists_public_works_only_newest_first(make_user, anonymous, save_work):
    marker = uuid.uuid4().hex[:10]
    alice = make_user()
    older = save_work(alice, title=f"older {marker}")
    hidden = save_work(alice, title=f"hidden {marker}", isPublic=False)
    newer = save_work(alice, title=f"newer {marker}")

    response = anonymous.get(f"/api/works/gallery?search={marker}")

    assert _ids(response) == [newer["id"], older["id"]]
    data = response.get_json()["data"]
    assert (data["pageSize"], data["nextCursor"]) == (24, None)
    item = data["items"][0]
    assert item["thumbnailUrl"].startswith("/media/works/thumbs/") and "sig=" not in item["thumbnailUrl"]
    assert (item["isLiked"], item["isOwner"], item["isNew"], item["featured"]) == (False, False, True, False)
    assert item["author"] == {"id": alice.user_id, "username": f"user{alice.user_id}", "displayName": None,
                              "avatarUrl": None}
    assert item["createdAt"].endswith("Z")
    assert hidden["id"] not in _ids(alice.get(f"/api/works/gallery?search={marker}"))


def test_gallery_search_covers_title_description_and_prompt(make_user, anonymous, save_work):
    marker = uuid.uuid4().hex[:10]
    alice = make_user()
    by_title = save_work(alice, title=f"{marker}s")  # a word beginning with the search word
    by_description = save_work(alice, description=f"about {marker.upper()} here")
    by_prompt = save_work(alice, prompt=f"castle {marker}")
    save_work(alice, title="unrelated")

    found = _ids(anonymous.get(f"/api/works/gallery?search={marker}"))

    assert sorted(found) == sorted([by_title["id"], by_description["id"], by_prompt["id"]])


def test_gallery_search_ranks_title_and_tag_matches_first(make_user, anonymous, save_work):
    marker = uuid.uuid4().hex[:10]
    alice = make_user()
    in_prompt = save_work(alice, title=f"{marker} one", prompt="a misty harbour")
    in_title = save_work(alice, title=f"{marker} misty harbour")
    in_tag = save_work(alice, title=f"{marker} three", tags=["harbour", "misty"])
    in_prompt_newer = save_work(alice, title=f"{marker} four", prompt="harbour, misty morning")

    found = _ids(anonymous.get("/api/works/gallery", query_string={"search": f"{marker} misty harbour"}))
    assert found == [in_tag["id"], in_title["id"], in_prompt_newer["id"], in_prompt["id"]]

    seen, cursor = [], None
    while True:
        query = {"search": f"{marker} misty harbour", "pageSize": 1, **({"cursor": cursor} if cursor else {})}
        data = anonymous.get("/api/works/gallery", query_string=query).get_json()["data"]
        seen += [item["id"] for item in data["items"]]
        cursor = data["nextCursor"]
        if cursor is None:
            break
    assert seen == found


def test_gallery_search_follows_edits_and_deletions(make_user, anonymous, save_work):
    marker = uuid.uuid4().hex[:10]
    alice = make_user()
    work = save_work(alice, title=f"{marker} 樱花")

    def search(term: str) -> list[int]:
        return _ids(anonymous.get("/api/works/gallery", query_string={"search": f"{marker} {term}"}))

    assert search("樱") == search("花") == search("樱花") == [work["id"]]
    assert alice.put(f"/api/works/{work['id']}", json={"title": f"{marker} 雪山", "tags": ["winter"]}).status_code == 200
    assert search("樱花") == [] and search("雪山") == search("wint") == [work["id"]]
    assert alice.delete(f"/api/works/{work['id']}").status_code == 200
    assert search("雪山") == []


def test_gallery_search_treats_wildcards_literally(make_user, anonymous, save_work):
    marker = uuid.uuid4().hex[:10]
    alice = make_user()
    percent = save_work(alice, title=f"{marker} 100% done")
    save_work(alice, title=f"{marker} 100 points")
    underscore = save_work(alice, title=f"{marker} a_b")
    save_work(alice, title=f"{marker} axb")

    assert _ids(anonymous.get("/api/works/gallery", query_string={"search": f"{marker} 100%"})) == [percent["id"]]
    assert _ids(anonymous.get("/api/works/gallery", query_string={"search": f"{marker} a_b"})) == [underscore["id"]]


def test_gallery_pages_with_a_cursor(make_user, anonymous, save_work):
    marker = uuid.uuid4().hex[:10]
    alice = make_user()
    works = [save_work(alice, title=f"{marker} {i}") for i in range(5)]
    newest_first = [w["id"] for w in reversed(works)]

    seen, cursor, pages = [], None, 0
    while True:
        query = {"search": marker, "pageSize": 2, **({"cursor": cursor} if cursor else {})}
        data = anonymous.get("/api/works/gallery", query_string=query).get_json()["data"]
        seen += [item["id"] for item in data["items"]]
        pages += 1
        cursor = data["nextCursor"]
        if cursor is None:
            break

    assert (seen, pages) == (newest_first, 3)


def test_gallery_cursor_survives_new_works_and_ties(make_user, anonymous, save_work):
    marker = uuid.uuid4().hex[:10]
    alice = make_user()
    works = [save_work(alice, title=f"{marker} {i}") for i in range(4)]
    first = anonymous.get("/api/works/gallery", query_string={"search": marker, "pageSize": 2,
                                                              "sort": "hottest"}).get_json()["data"]
    save_work(alice, title=f"{marker} late")  # arrives between pages, same like count (0)
    second = anonymous.get("/api/works/gallery", query_string={
        "search": marker, "pageSize": 2, "sort": "hottest", "cursor": first["nextCursor"]}).get_json()["data"]
    ids = [i["id"] for i in first["items"] + second["items"]]
    assert sorted(ids) == sorted(w["id"] for w in works) and len(set(ids)) == 4


@pytest.mark.parametrize("cursor", ["???", "bm90IGpzb24", "WyJob3R0ZXN0IiwxLDFd", "W10", "x" * 201])
def test_gallery_rejects_malformed_or_foreign_cursors(anonymous, cursor):
    response = anonymous.get("/api/works/gallery", query_string={"cursor": cursor})
    assert response.status_code == 422, cursor
    assert response.get_json()["success"] is False


def _cursor(*parts) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts, separators=(",", ":")).encode()).decode().rstrip("=")


@pytest.mark.parametrize(("sort", "cursor"), [
    ("newest", _cursor("newest", "2025-01-01T00:00:00", 10**25)),  # no 64-bit column holds these ids
    ("hottest", _cursor("hottest", 10**25, 5)),
    ("hottest", _cursor("hottest", 3, 2**63)),
    ("trending", _cursor("trending", "1e999", 5)),
    ("trending", _cursor("trending", "nan", 5)),
])
def test_a_cursor_with_numbers_no_column_holds_is_refused_not_a_crash(anonymous, sort, cursor):
    response = anonymous.get("/api/works/gallery", query_string={"sort": sort, "cursor": cursor})
    assert (response.status_code, response.get_json()["error"]["code"]) == (422, "INVALID_CURSOR")


def test_gallery_search_finds_chinese_text(make_user, anonymous, save_work):
    marker = uuid.uuid4().hex[:10]
    alice = make_user()
    city = save_work(alice, title=f"{marker} 赛博朋克城市的夜晚", tags=["国风"], prompt="neon city")
    crane = save_work(alice, title=f"{marker} 仙鹤", prompt="水墨仙鹤，山水之间")
    save_work(alice, title=f"{marker} lighthouse")

    def search(term):
        return sorted(_ids(anonymous.get("/api/works/gallery", query_string={"search": f"{marker} {term}"})))

    assert search("城市") == [city["id"]]
    assert search("水墨") == [crane["id"]]
    assert search("国风") == [city["id"]]
    assert search("ＬＩＧＨＴＨＯＵＳＥ") == search("lighthouse")
    assert len(search("lighthouse")) == 1


def test_gallery_filters_by_tag_model_and_author(make_user, anonymous, save_work):
    marker = uuid.uuid4().hex[:10]
    alice, bob = make_user(), make_user()
    tagged = save_work(alice, title=f"{marker} a", tags=["Landscape"])
    by_bob = save_work(bob, title=f"{marker} b")

    def ids(**query):
        return _ids(anonymous.get("/api/works/gallery", query_string={"search": marker, **query}))

    assert ids(tag="landscape") == [tagged["id"]]
    assert ids(tag="portrait") == []
    assert ids(authorId=bob.user_id) == [by_bob["id"]]
    assert sorted(ids(model="sd15.safetensors")) == sorted([tagged["id"], by_bob["id"]])
    assert ids(model="other.safetensors") == []
    for period in ("today", "week", "month", "all"):
        assert len(ids(period=period)) == 2


def test_gallery_period_excludes_older_works(make_user, anonymous, save_work, app):
    from datetime import timedelta

    from sqlalchemy import update

    from services.gallery.models import Work
    from shared.db import utcnow

    marker = uuid.uuid4().hex[:10]
    alice = make_user()
    old = save_work(alice, title=f"{marker} old")
    recent = save_work(alice, title=f"{marker} recent")
    with app.extensions["db"].transaction() as session:
        session.execute(update(Work).where(Work.id == old["id"]).values(created_at=utcnow() - timedelta(days=40)))

    def ids(period):
        return _ids(anonymous.get("/api/works/gallery", query_string={"search": marker, "period": period}))

    assert ids("month") == [recent["id"]]
    assert ids("all") == [recent["id"], old["id"]]
    old_item = anonymous.get(f"/api/works/{old['id']}").get_json()["data"]["work"]
    assert old_item["isNew"] is False


def test_gallery_sorts_by_views_and_trending(make_user, anonymous, save_work):
    marker = uuid.uuid4().hex[:10]
    alice, bob, carol = make_user(), make_user(), make_user()
    quiet = save_work(alice, title=f"{marker} quiet")
    viewed = save_work(alice, title=f"{marker} viewed")
    liked = save_work(alice, title=f"{marker} liked")
    for caller in (bob, carol):
        caller.post(f"/api/works/{viewed['id']}/view")
    bob.put(f"/api/works/{liked['id']}/like")

    def ids(sort):
        return _ids(anonymous.get("/api/works/gallery", query_string={"search": marker, "sort": sort}))

    assert ids("views") == [viewed["id"], liked["id"], quiet["id"]]
    assert ids("trending")[0] == liked["id"]
    assert ids("hottest") == [liked["id"], viewed["id"], quiet["id"]]
    assert ids("newest") == [liked["id"], viewed["id"], quiet["id"]]


@pytest.mark.parametrize("query", [
    "pageSize=0", "pageSize=-1", f"pageSize={10**9}", "pageSize=101", "pageSize=1.5", "sort=random",
    "sort=likes", "unknown=1", "period=year", "authorId=0", "authorId=abc", "tag=" + "x" * 21, "page=2",
])
def test_gallery_rejects_bad_query(anonymous, query):
    response = anonymous.get(f"/api/works/gallery?{query}")
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "VALIDATION_ERROR"


def test_my_works_lists_public_and_private_of_the_caller_only(make_user, anonymous, save_work):
    alice, bob = make_user(), make_user()
    public = save_work(alice)
    private = save_work(alice, isPublic=False)
    save_work(bob)

    response = alice.get("/api/works/my")

    assert _ids(response) == [private["id"], public["id"]]
    assert response.get_json()["data"]["total"] == 2
    assert all(item["isOwner"] for item in response.get_json()["data"]["items"])
    assert anonymous.get("/api/works/my").status_code == 401
    assert alice.get("/api/works/my?pageSize=0").status_code == 422


def test_detail_visibility(make_user, anonymous, save_work):
    alice, bob = make_user(), make_user()
    public = save_work(alice)
    private = save_work(alice, isPublic=False)

    for caller in (alice, bob, anonymous):
        response = caller.get(f"/api/works/{public['id']}")
        assert response.status_code == 200
        assert response.get_json()["data"]["work"]["isOwner"] is (caller is alice)
    own = alice.get(f"/api/works/{private['id']}")
    assert own.status_code == 200 and own.get_json()["data"]["work"]["isPublic"] is False
    for caller in (bob, anonymous):
        response = caller.get(f"/api/works/{private['id']}")
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "WORK_NOT_FOUND"


def test_detail_of_missing_or_absurd_id_is_404(anonymous):
    for work_id in (0, 2**31, 10**30):
        assert anonymous.get(f"/api/works/{work_id}").status_code == 404


def test_reading_does_not_count_views(make_user, anonymous, save_work):
    work = save_work(make_user())
    for _ in range(3):
        anonymous.get(f"/api/works/{work['id']}")
    assert anonymous.get(f"/api/works/{work['id']}").get_json()["data"]["work"]["views"] == 0


def test_bad_token_is_401_even_where_anonymous_is_allowed(anonymous):
    anonymous.headers["Authorization"] = "Bearer not-a-jwt"
    response = anonymous.get("/api/works/gallery")
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "TOKEN_INVALID"


@pytest.mark.parametrize("plan", ["rarest term", "terms outside titles", "sort order"])
def test_gallery_search_pages_through_every_match_with_either_plan(make_user, anonymous, save_work, monkeypatch,
                                                                   plan):
    """Read from the index's candidates (the rarest term's works; for the second group, the
    works with a term outside their title and tags), or (every term common) works read in
    sort order a few at a time: pages may then come short, but the cursors reach every match
    once."""
    if plan == "terms outside titles":  # "kite" in 6 works, 3 of them outside the title
        monkeypatch.setattr("services.gallery.search.DRIVING_LIMIT", 4)
    elif plan == "sort order":
        monkeypatch.setattr("services.gallery.search.DRIVING_LIMIT", 1)
        monkeypatch.setattr("services.gallery.listing.WALK_ROWS", 3)
    marker = uuid.uuid4().hex[:10]
    alice = make_user()
    works = [save_work(alice, title=f"{marker} {'kite' if i % 3 == 0 else 'other'} {i}",
                       prompt="a kite over the sea" if i % 3 == 1 else "a quiet street") for i in range(9)]
    save_work(alice, title=f"{marker} kite private", prompt="a kite", isPublic=False)  # never in the gallery
    in_title = [w["id"] for w in reversed(works) if "kite" in w["title"]]
    in_prompt = [w["id"] for w in reversed(works) if "kite" not in w["title"] and w["prompt"].startswith("a kite")]

    seen, cursor, pages = [], None, 0
    while pages < 50:
        query = {"search": f"kite {marker}", "pageSize": 2, "authorId": alice.user_id,
                 **({"cursor": cursor} if cursor else {})}
        data = anonymous.get("/api/works/gallery", query_string=query).get_json()["data"]
        seen += [item["id"] for item in data["items"]]
        pages += 1
        cursor = data["nextCursor"]
        if cursor is None:
            break
    assert seen == in_title + in_prompt


@pytest.mark.parametrize("walk", [False, True])
def test_gallery_search_needs_the_whole_word_not_only_its_terms(make_user, anonymous, save_work, monkeypatch, walk):
    """A CJK word's pairs apart, or the pieces of a word with punctuation, are not the word."""
    if walk:
        monkeypatch.setattr("services.gallery.search.DRIVING_LIMIT", 1)
    marker = uuid.uuid4().hex[:10]
    alice = make_user()
    whole = save_work(alice, title=f"{marker} 赛博朋克", prompt="hello-world, sci-fi")
    save_work(alice, title=f"{marker} 赛博 博朋 朋克", prompt="hello world, sci fi")
    long_word = "a" * 40
    longer = save_work(alice, title=f"{marker} {long_word}")
    save_work(alice, title=f"{marker} {'a' * 33}")

    def search(term: str) -> list[int]:
        return _ids(anonymous.get("/api/works/gallery", query_string={"search": f"{marker} {term}"}))

    assert search("赛博朋克") == search("hello-world") == search("sci-fi") == [whole["id"]]
    assert search(long_word) == [longer["id"]]
    assert len(search("博朋")) == 2 and len(search("hello")) == 2
    newer_apart = save_work(alice, title=f"{marker} 赛博 博朋 朋克 again")
    seen, cursor = [], None  # pages of one: a page whose finds fail the text check comes short
    for _ in range(10):
        query = {"search": f"{marker} 赛博朋克", "pageSize": 1, **({"cursor": cursor} if cursor else {})}
        data = anonymous.get("/api/works/gallery", query_string=query).get_json()["data"]
        seen += [item["id"] for item in data["items"]]
        cursor = data["nextCursor"]
        if cursor is None:
            break
    assert seen == [whole["id"]] and newer_apart["id"] not in seen
