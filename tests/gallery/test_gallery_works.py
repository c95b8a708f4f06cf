"""Works beyond a single save: whole jobs, reproduction data, remix, default visibility,
storage faults, file removal, batch operations, my-works filters and stats."""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from services.gallery.models import Work


def _work_count(app, output_id: str) -> int:
    with app.extensions["db"].read() as session:
        return session.scalar(select(func.count()).select_from(Work).where(Work.output_id == output_id))


def _storage(app):
    return app.extensions["gallery"].files.storage


def test_save_keeps_reproduction_data_and_remix_returns_it(make_user, add_output, anonymous):
    alice = make_user()
    graph = {"3": {"class_type": "KSampler", "inputs": {"seed": 42}}}
    output_id = add_output(alice.user_id, "red fox", graph=graph, workflowVersion="2", sourceWorkId=77)
    work = alice.post("/api/works/save", json={"outputId": output_id, "title": "fox", "isPublic": True}
                      ).get_json()["data"]["work"]
    assert (work["graph"], work["workflowVersion"], work["sourceWorkId"], work["model"]) == \
        (graph, "2", 77, "sd15.safetensors")

    remix = anonymous.get(f"/api/works/{work['id']}/remix")
    assert remix.status_code == 200
    assert remix.get_json()["data"] == {"sourceWorkId": work["id"], "workflow": "text2img",
                                        "workflowVersion": "2", "params": work["params"]}


def test_remix_of_a_private_work_is_only_for_its_owner(make_user, save_work):
    alice, bob = make_user(), make_user()
    private = save_work(alice, isPublic=False)
    assert alice.get(f"/api/works/{private['id']}/remix").status_code == 200
    assert bob.get(f"/api/works/{private['id']}/remix").status_code == 404


def test_default_visibility_follows_the_privacy_setting(make_user, add_output, fake_gateway):
    alice = make_user()
    fake_gateway.users[alice.user_id] = {"newWorksPublic": False}
    work = alice.post("/api/works/save", json={"outputId": add_output(alice.user_id), "title": "x"}
                      ).get_json()["data"]["work"]
    assert work["isPublic"] is False
    chosen = alice.post("/api/works/save", json={"outputId": add_output(alice.user_id), "title": "x",
                                                 "isPublic": True}).get_json()["data"]["work"]
    assert chosen["isPublic"] is True


def test_save_job_saves_every_output_once(make_user, add_output, fake_gateway):
    alice, bob = make_user(), make_user()
    job_id = uuid.uuid4().hex
    ids = [add_output(alice.user_id, job_id=job_id, index=i) for i in range(3)]
    alice.post("/api/works/save", json={"outputId": ids[1], "title": "single"})

    response = alice.post("/api/works/save-job", json={"jobId": job_id, "title": "batch", "tags": ["a"]})

    assert response.status_code == 201
    data = response.get_json()["data"]
    assert [w["title"] for w in data["works"]] == ["batch #1", "batch #3"]
    assert data["skipped"] == [ids[1]]
    assert bob.post("/api/works/save-job", json={"jobId": job_id, "title": "x"}).status_code == 403
    assert alice.post("/api/works/save-job", json={"jobId": "nope", "title": "x"}).status_code == 404
    assert alice.post("/api/works/save-job", json={"jobId": "../x", "title": "x"}).status_code == 422
    again = alice.post("/api/works/save-job", json={"jobId": job_id, "title": "batch"}).get_json()["data"]
    assert again["works"] == [] and sorted(again["skipped"]) == sorted(ids)


def test_storage_failure_while_saving_leaves_no_work(make_user, add_output, app):
    alice = make_user()
    output_id = add_output(alice.user_id)
    blocker = _storage(app).root / "works"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder")  # every copy into works/ now fails
    try:
        response = alice.post("/api/works/save", json={"outputId": output_id, "title": "x"})
    finally:
        blocker.unlink()
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "STORAGE_UNAVAILABLE"
    assert _work_count(app, output_id) == 0
    assert alice.post("/api/works/save", json={"outputId": output_id, "title": "x"}).status_code == 201


def test_output_whose_file_is_gone_cannot_be_saved(make_user, fake_gateway, app):
    alice = make_user()
    output_id = fake_gateway.add_output(alice.user_id)  # no file written
    response = alice.post("/api/works/save", json={"outputId": output_id, "title": "x"})
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "OUTPUT_FILE_MISSING"
    assert _work_count(app, output_id) == 0


def test_files_are_removed_after_the_last_reference(make_user, add_output, fake_gateway, app):
    alice = make_user()
    first = add_output(alice.user_id)
    twin = uuid.uuid4().hex  # a second output with identical bytes (same content keys)
    fake_gateway.outputs[twin] = {**fake_gateway.outputs[first], "id": twin}
    works = [alice.post("/api/works/save", json={"outputId": o, "title": "x"}).get_json()["data"]["work"]
             for o in (first, twin)]
    record = fake_gateway.outputs[first]
    image_key = "works/" + record["imageKey"]
    storage = _storage(app)
    assert storage.exists(image_key)

    alice.delete(f"/api/works/{works[0]['id']}")
    assert storage.exists(image_key)  # the twin still uses it
    alice.delete(f"/api/works/{works[1]['id']}")
    assert not storage.exists(image_key)
    assert not storage.exists("works/" + record["thumbnailKey"])
    assert storage.exists(record["imageKey"])  # the output's own file is render's to expire


def test_batch_publish_tag_and_delete(make_user, save_work, app):
    alice, bob = make_user(), make_user()
    works = [save_work(alice, isPublic=False, tags=["old"]) for _ in range(3)]
    ids = [w["id"] for w in works]
    theirs = save_work(bob)

    def batch(caller, **body):
        return caller.post("/api/works/batch", json=body)

    assert batch(alice, ids=ids, action="publish").status_code == 200
    assert all(alice.get(f"/api/works/{i}").get_json()["data"]["work"]["isPublic"] for i in ids)
    assert batch(alice, ids=ids[:2], action="tag", tags=["new", "old"]).status_code == 200
    assert alice.get(f"/api/works/{ids[0]}").get_json()["data"]["work"]["tags"] == ["old", "new"]

    mixed = batch(alice, ids=[ids[0], theirs["id"]], action="unpublish")
    assert mixed.status_code == 404
    assert mixed.get_json()["error"]["details"] == {"missing": [theirs["id"]]}
    assert alice.get(f"/api/works/{ids[0]}").get_json()["data"]["work"]["isPublic"] is True

    too_many = batch(alice, ids=ids[:1], action="tag", tags=[f"t{i}" for i in range(10)])
    assert too_many.status_code == 409
    for body in ({"ids": [], "action": "publish"}, {"ids": ids, "action": "explode"},
                 {"ids": ["1"], "action": "publish"}, {"ids": ids, "action": "tag"},
                 {"ids": list(range(1, 102)), "action": "delete"}, {"ids": ids, "action": "publish", "tags": ["x"]}):
        assert batch(alice, **body).status_code == 422, body

    assert batch(alice, ids=ids, action="delete").status_code == 200
    assert all(alice.get(f"/api/works/{i}").status_code == 404 for i in ids)


def test_my_works_filters_and_sorts(make_user, save_work):
    alice, bob = make_user(), make_user()
    public = save_work(alice, title="sunset 海边", tags=["sea"])
    private = save_work(alice, title="private fox", isPublic=False, prompt="fox in snow")
    bob.put(f"/api/works/{public['id']}/like")

    def ids(**query):
        response = alice.get("/api/works/my", query_string=query)
        assert response.status_code == 200, response.get_json()
        return [w["id"] for w in response.get_json()["data"]["items"]]

    assert ids(visibility="public") == [public["id"]]
    assert ids(visibility="private") == [private["id"]]
    assert ids(search="海边") == [public["id"]]
    assert ids(search="snow") == [private["id"]]
    assert ids(tag="SEA") == [public["id"]]
    assert ids(sort="oldest") == [public["id"], private["id"]]
    assert ids(sort="likes")[0] == public["id"]
    assert ids(model="nothing") == []
    today = public["createdAt"][:10]
    assert len(ids(dateFrom="2000-01-01", dateTo="2099-12-31")) == 2
    assert ids(dateTo="2000-01-01") == []
    assert len(ids(dateFrom=today)) == 2 or len(ids(dateTo=today)) == 2  # UTC date vs the gallery's zone
    for bad in ({"dateFrom": "2026-02-30"}, {"dateFrom": "2026-03-02", "dateTo": "2026-03-01"},
                {"visibility": "secret"}, {"sort": "random"}, {"pageSize": 1000}):
        assert alice.get("/api/works/my", query_string=bad).status_code == 422, bad


def test_stats_count_what_the_author_received(make_user, save_work, anonymous):
    alice, bob = make_user(), make_user()
    public = save_work(alice)
    save_work(alice, isPublic=False)
    bob.put(f"/api/works/{public['id']}/like")
    bob.post(f"/api/works/{public['id']}/view")
    anonymous.post(f"/api/works/{public['id']}/view")

    stats = alice.get("/api/works/stats").get_json()["data"]

    assert stats == {"totalWorks": 2, "publicWorks": 1, "likesReceived": 1, "viewsReceived": 2,
                     "downloadsReceived": 0, "worksThisMonth": 2}
    internal = anonymous.get(f"/internal/users/{alice.user_id}/stats").get_json()["data"]
    assert internal == {"works": 1, "likesReceived": 1}


@pytest.mark.parametrize("path", ["/api/works/../etc/passwd", "/api/works/-1", "/api/works/abc",
                                  "/api/works/1%2F..%2F2"])
def test_path_like_ids_are_404(anonymous, path):
    response = anonymous.get(path)
    assert response.status_code == 404
    assert response.get_json()["success"] is False
