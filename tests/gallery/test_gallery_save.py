"""Saving a render output as a work: POST /api/works/save."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from services.gallery.app import create_app
from services.gallery.models import Work
from shared.config import load_settings
from shared.embedded import free_port


def _count_works(app, output_id: str) -> int:
    with app.extensions["db"].transaction() as session:
        return session.scalar(select(func.count()).select_from(Work).where(Work.output_id == output_id))


def test_save_creates_work_from_output_record(make_user, add_output, fake_gateway):
    alice = make_user()
    output_id = add_output(alice.user_id, prompt="red fox in snow")
    record = fake_gateway.outputs[output_id]

    response = alice.post("/api/works/save", json={
        "outputId": output_id, "title": "  Fox  ", "description": "winter study",
        "tags": [" fox ", "snow", "fox", "winter "], "isPublic": False})

    assert response.status_code == 201
    body = response.get_json()
    assert body["success"] is True
    work = body["data"]["work"]
    assert work["title"] == "Fox"
    assert work["description"] == "winter study"
    assert work["tags"] == ["fox", "snow", "winter"]
    assert work["isPublic"] is False
    # Private: the work's own copies, reachable only through expiring signed URLs.
    assert work["imageUrl"].startswith(f"/media/works/{record['imageKey']}?exp=")
    assert work["thumbnailUrl"].startswith(f"/media/works/{record['thumbnailKey']}?exp=")
    assert (work["width"], work["height"], work["fileSize"]) == (512, 768, record["fileSize"])
    assert work["sha256"] == record["sha256"]
    assert work["workflow"] == "text2img"
    assert work["prompt"] == "red fox in snow"
    assert work["negativePrompt"] == "blurry"
    assert work["params"] == record["params"]
    assert work["author"] == {"id": alice.user_id, "username": f"user{alice.user_id}", "displayName": None,
                              "avatarUrl": None}
    assert (work["likes"], work["views"], work["isLiked"], work["isOwner"]) == (0, 0, False, True)
    assert (work["jobId"], work["outputId"]) == (record["jobId"], output_id)
    assert work["createdAt"].endswith("Z") and work["updatedAt"].endswith("Z")
    assert isinstance(work["id"], int)


def test_save_defaults_public_with_empty_description_and_tags(make_user, save_work):
    work = save_work(make_user(), title="Plain")
    assert (work["isPublic"], work["description"], work["tags"]) == (True, "", [])


@pytest.mark.parametrize("change, field", [
    ({"title": None}, "title"),
    ({"title": "   "}, "title"),
    ({"title": "x" * 101}, "title"),
    ({"title": 5}, "title"),
    ({"description": "d" * 1001}, "description"),
    ({"tags": [f"t{i}" for i in range(11)]}, "tags"),
    ({"tags": ["x" * 21]}, "tags"),
    ({"tags": ["  "]}, "tags"),
    ({"tags": "fox"}, "tags"),
    ({"isPublic": "yes"}, "isPublic"),
    ({"isPublic": 1}, "isPublic"),
    ({"imageKey": "../../etc/passwd"}, "imageKey"),
    ({"outputId": "../secret"}, "outputId"),
])
def test_save_rejects_invalid_fields(make_user, add_output, fake_gateway, app, change, field):
    alice = make_user()
    output_id = add_output(alice.user_id)
    response = alice.post("/api/works/save", json={"outputId": output_id, "title": "ok", **change})

    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert field in error["details"]
    assert _count_works(app, output_id) == 0


def test_save_requires_a_title(make_user, add_output, fake_gateway):
    alice = make_user()
    response = alice.post("/api/works/save", json={"outputId": add_output(alice.user_id)})
    assert response.status_code == 422
    assert "title" in response.get_json()["error"]["details"]


def test_save_requires_a_json_body(make_user):
    response = make_user().post("/api/works/save", data="title=x", content_type="text/plain")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "INVALID_JSON"


def test_save_requires_a_user_token(anonymous, add_output, fake_gateway):
    response = anonymous.post("/api/works/save", json={"outputId": add_output(1), "title": "x"})
    assert response.status_code == 401


def test_save_refuses_another_users_output(make_user, add_output, fake_gateway, app):
    alice, mallory = make_user(), make_user()
    output_id = add_output(alice.user_id)

    response = mallory.post("/api/works/save", json={"outputId": output_id, "title": "mine now"})

    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "NOT_YOUR_OUTPUT"
    assert _count_works(app, output_id) == 0


def test_save_unknown_output_is_404(make_user):
    response = make_user().post("/api/works/save", json={"outputId": "doesnotexist", "title": "x"})
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "OUTPUT_NOT_FOUND"


def test_saving_the_same_output_twice_is_409_with_the_work_id(make_user, add_output, fake_gateway, app):
    alice = make_user()
    output_id = add_output(alice.user_id)
    first = alice.post("/api/works/save", json={"outputId": output_id, "title": "one"})

    second = alice.post("/api/works/save", json={"outputId": output_id, "title": "two"})

    assert second.status_code == 409
    error = second.get_json()["error"]
    assert error["code"] == "ALREADY_SAVED"
    assert error["details"] == {"workId": first.get_json()["data"]["work"]["id"]}
    assert _count_works(app, output_id) == 1


def test_save_when_the_render_api_is_down_is_503(settings_env, service_headers, issue_token):
    settings = load_settings({**settings_env, "RENDER_URL": f"http://127.0.0.1:{free_port()}"})
    app = create_app(settings)
    headers = {**service_headers, "Authorization": f"Bearer {issue_token(7, 'seven')}"}

    response = app.test_client().post("/api/works/save", headers=headers, json={"outputId": "abc", "title": "x"})

    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "RENDER_UNAVAILABLE"
    app.extensions["db"].dispose()


def test_save_when_the_render_api_fails_is_503(make_user, add_output, fake_gateway):
    response = make_user().post("/api/works/save", json={"outputId": fake_gateway.BROKEN_ID, "title": "x"})
    assert response.status_code == 503
    assert response.get_json()["error"]["details"] == {"upstreamStatus": 500}


def test_routes_require_the_service_token(app, make_user):
    alice = make_user()
    headers = {"Authorization": alice.headers["Authorization"]}
    client = app.test_client()
    for method, path in [("GET", "/api/works/gallery"), ("GET", "/api/works/my"),
                         ("POST", "/api/works/save"), ("PUT", "/api/works/1/like")]:
        response = client.open(path, method=method, headers=headers, json={})
        assert response.status_code == 403, path
        assert response.get_json()["error"]["code"] == "SERVICE_TOKEN_REQUIRED"
    assert client.get("/healthz").status_code == 200


def test_readyz_reports_the_database(app):
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["data"]["components"] == {"database": "ok"}
