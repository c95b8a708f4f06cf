"""What moderators and readers see of authors and works: display names from auth's directory,
and every work listed for moderation (all, public, private, hidden)."""
from __future__ import annotations

import uuid

import pytest


def test_authors_are_shown_by_their_display_name(make_user, anonymous, save_work, fake_gateway):
    alice = make_user()
    fake_gateway.users[alice.user_id] = {"displayName": "小明创作"}
    work = save_work(alice, title="Fox", isPublic=True)
    assert work["author"]["displayName"] == "小明创作"
    card = next(item for item in anonymous.get("/api/works/gallery?pageSize=100").get_json()["data"]["items"]
                if item["id"] == work["id"])
    assert (card["author"]["username"], card["author"]["displayName"]) == (f"user{alice.user_id}", "小明创作")


def test_moderators_list_every_work_by_status_and_search(make_user, save_work):
    alice, admin = make_user(), make_user("admin")
    marker = uuid.uuid4().hex[:8]
    public = save_work(alice, title=f"public {marker}", isPublic=True)
    private = save_work(alice, title=f"private {marker}", isPublic=False)
    hidden = save_work(alice, title=f"hidden {marker}", isPublic=True)
    assert admin.post(f"/api/admin/works/{hidden['id']}/hide", json={"reason": "spam"}).status_code == 200

    def listed(**query):
        response = admin.get("/api/admin/works", query_string={"search": marker, **query})
        assert response.status_code == 200, response.get_json()
        return response.get_json()["data"]

    everything = listed()
    assert [item["id"] for item in everything["items"]] == [hidden["id"], private["id"], public["id"]]
    assert everything["total"] == 3 and everything["page"] == 1
    assert [item["id"] for item in listed(status="public")["items"]] == [public["id"]]
    assert [item["id"] for item in listed(status="private")["items"]] == [private["id"]]
    hidden_items = listed(status="hidden")["items"]
    assert [(item["id"], item["hidden"], item["hiddenReason"]) for item in hidden_items] == [(hidden["id"], True, "spam")]
    assert hidden_items[0]["imageUrl"] and hidden_items[0]["author"]["id"] == alice.user_id
    second = listed(pageSize=2, page=2)
    assert ([item["id"] for item in second["items"]], second["total"]) == ([public["id"]], 3)
    assert listed(search=f"private {marker}")["total"] == 1


@pytest.mark.parametrize("query", ["status=removed", "page=0", "pageSize=101", "search=" + "x" * 101, "sort=likes"])
def test_bad_moderation_queries_are_422(make_user, query):
    assert make_user("admin").get(f"/api/admin/works?{query}").status_code == 422


def test_only_admins_list_works_for_moderation(make_user, anonymous):
    assert make_user().get("/api/admin/works").status_code == 403
    assert anonymous.get("/api/admin/works").status_code == 401
