"""Listing and reading works: the public gallery, the caller's own works, one work."""
from __future__ import annotations

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
    assert (data["page"], data["pageSize"], data["total"]) == (1, 24, 2)
    item = data["items"][0]
    assert item["thumbnailUrl"].startswith("/media/thumbs/")
    assert (item["isLiked"], item["isOwner"]) == (False, False)
    assert hidden["id"] not in _ids(alice.get(f"/api/works/gallery?search={marker}"))


def test_gallery_search_covers_title_description_and_prompt(make_user, anonymous, save_work):
    marker = uuid.uuid4().hex[:10]
    alice = make_user()
    by_title = save_work(alice, title=f"T{marker}")
    by_description = save_work(alice, description=f"about {marker.upper()} here")
    by_prompt = save_work(alice, prompt=f"castle {marker}")
    save_work(alice, title="unrelated")

    found = _ids(anonymous.get(f"/api/works/gallery?search={marker}"))

    assert sorted(found) == sorted([by_title["id"], by_description["id"], by_prompt["id"]])


def test_gallery_search_treats_wildcards_literally(make_user, anonymous, save_work):
    marker = uuid.uuid4().hex[:10]
    alice = make_user()
    percent = save_work(alice, title=f"{marker} 100% done")
    save_work(alice, title=f"{marker} 100 points")
    underscore = save_work(alice, title=f"{marker} a_b")
    save_work(alice, title=f"{marker} axb")

    assert _ids(anonymous.get("/api/works/gallery", query_string={"search": f"{marker} 100%"})) == [percent["id"]]
    assert _ids(anonymous.get("/api/works/gallery", query_string={"search": f"{marker} a_b"})) == [underscore["id"]]


def test_gallery_paginates(make_user, anonymous, save_work):
    marker = uuid.uuid4().hex[:10]
    alice = make_user()
    works = [save_work(alice, title=f"{marker} {i}") for i in range(5)]
    newest_first = [w["id"] for w in reversed(works)]

    page1 = anonymous.get(f"/api/works/gallery?search={marker}&page=1&pageSize=2")
    page3 = anonymous.get(f"/api/works/gallery?search={marker}&page=3&pageSize=2")
    page4 = anonymous.get(f"/api/works/gallery?search={marker}&page=4&pageSize=2")

    assert _ids(page1) == newest_first[:2]
    assert _ids(page3) == newest_first[4:]
    assert _ids(page4) == []
    assert page4.get_json()["data"]["total"] == 5


def test_gallery_sorts_by_likes(make_user, anonymous, save_work):
    marker = uuid.uuid4().hex[:10]
    alice, bob = make_user(), make_user()
    plain = save_work(alice, title=f"{marker} plain")
    liked = save_work(alice, title=f"{marker} liked")
    popular = save_work(alice, title=f"{marker} popular")
    for caller in (alice, bob):
        caller.put(f"/api/works/{popular['id']}/like")
    bob.put(f"/api/works/{liked['id']}/like")

    ranked = _ids(anonymous.get(f"/api/works/gallery?search={marker}&sort=likes"))

    assert ranked == [popular["id"], liked["id"], plain["id"]]
    assert _ids(anonymous.get(f"/api/works/gallery?search={marker}&sort=views")) \
        == [popular["id"], liked["id"], plain["id"]]  # no views yet: ties fall back to newest


@pytest.mark.parametrize("query", [
    "page=0", "page=-1", f"page={10**9}", "pageSize=0", "pageSize=-1", f"pageSize={10**9}",
    "pageSize=101", "page=abc", "page=1.5", "sort=random", "unknown=1",
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
