"""Editing and deleting works: only the author may."""
from __future__ import annotations

from sqlalchemy import func, select

from services.gallery.models import WorkLike


def test_owner_updates_fields(make_user, save_work, anonymous):
    alice = make_user()
    work = save_work(alice, title="before", tags=["a"])

    response = alice.put(f"/api/works/{work['id']}", json={
        "title": " after ", "description": "new words", "tags": ["x", "y", "x"], "isPublic": False})

    assert response.status_code == 200
    updated = response.get_json()["data"]["work"]
    assert (updated["title"], updated["description"], updated["tags"], updated["isPublic"]) == \
        ("after", "new words", ["x", "y"], False)
    assert updated["updatedAt"] >= work["updatedAt"]
    assert updated["createdAt"] == work["createdAt"]
    assert anonymous.get(f"/api/works/{work['id']}").status_code == 404


def test_partial_update_keeps_other_fields(make_user, save_work):
    alice = make_user()
    work = save_work(alice, title="keep", description="keep too")
    updated = alice.put(f"/api/works/{work['id']}", json={"tags": ["only"]}).get_json()["data"]["work"]
    assert (updated["title"], updated["description"], updated["tags"]) == ("keep", "keep too", ["only"])


def test_update_validates_input(make_user, save_work):
    alice = make_user()
    work = save_work(alice)
    for body in ({}, {"title": ""}, {"title": "x" * 101}, {"imageKey": "x"}, {"isPublic": "no"}):
        response = alice.put(f"/api/works/{work['id']}", json=body)
        assert response.status_code == 422, body
    assert alice.put(f"/api/works/{work['id']}", data="x", content_type="text/plain").status_code == 400


def test_others_may_not_update_or_delete(make_user, save_work, anonymous):
    alice, bob = make_user(), make_user()
    public = save_work(alice)
    private = save_work(alice, isPublic=False)

    for response in (bob.put(f"/api/works/{public['id']}", json={"title": "mine"}),
                     bob.delete(f"/api/works/{public['id']}")):
        assert response.status_code == 403
        assert response.get_json()["error"]["code"] == "NOT_YOUR_WORK"
    assert bob.put(f"/api/works/{private['id']}", json={"title": "mine"}).status_code == 404
    assert bob.delete(f"/api/works/{private['id']}").status_code == 404
    assert anonymous.delete(f"/api/works/{public['id']}").status_code == 401
    assert alice.get(f"/api/works/{public['id']}").get_json()["data"]["work"]["title"] == "A work"


def test_owner_deletes_work_and_its_likes(make_user, save_work, app):
    alice, bob = make_user(), make_user()
    work = save_work(alice)
    bob.put(f"/api/works/{work['id']}/like")

    response = alice.delete(f"/api/works/{work['id']}")

    assert response.status_code == 200
    assert response.get_json()["data"] == {"deleted": True}
    assert alice.get(f"/api/works/{work['id']}").status_code == 404
    assert alice.delete(f"/api/works/{work['id']}").status_code == 404
    with app.extensions["db"].transaction() as session:
        assert session.scalar(select(func.count()).select_from(WorkLike)
                              .where(WorkLike.work_id == work["id"])) == 0
    again = alice.post("/api/works/save", json={"outputId": work["outputId"], "title": "again"})
    assert again.status_code == 201
