"""Notifications: posted by services, listed, counted, marked read, deleted, pushed live."""
from __future__ import annotations

from tests.conftest import listen_live


def _post(caller, **body):
    return caller.post("/internal/notifications", json=body)


def test_services_post_notifications_that_are_pushed_live(make_user, anonymous, redis_url):
    alice = make_user()
    listener = listen_live(redis_url, alice.user_id)
    assert next(listener) is None

    response = _post(anonymous, userId=alice.user_id, type="credits.granted", title="You received 100 credits",
                     body="From an administrator", data={"amount": 100}, dedupeKey="grant:1")

    assert response.status_code == 201
    note = response.get_json()["data"]["notification"]
    assert (note["type"], note["isRead"], note["data"]) == ("credits.granted", False, {"amount": 100})
    # A repeated cause (a retried call, a job's final event sent twice) is stored and pushed once.
    again = _post(anonymous, userId=alice.user_id, type="credits.granted", title="dup", dedupeKey="grant:1")
    assert again.status_code == 200 and again.get_json()["data"]["notification"]["id"] == note["id"]
    events = [e for e in (next(listener) for _ in range(5)) if e]
    listener.close()
    assert [(e["type"], e["data"]["id"]) for e in events] == [("notification.created", note["id"])]
    assert alice.get("/api/notifications/unread-count").get_json()["data"] == {"unreadCount": 1}


def test_internal_notifications_validate_input(anonymous, make_user):
    for body in ({}, {"userId": "1", "type": "job.failed", "title": "x"},
                 {"userId": 1, "type": "Job Failed", "title": "x"}, {"userId": 1, "type": "job.failed", "title": ""},
                 {"userId": 1, "type": "job.failed", "title": "x", "data": []},
                 {"userId": 1, "type": "job.failed", "title": "x", "extra": 1}):
        assert _post(anonymous, **body).status_code == 422, body
    user = make_user()
    assert user.post("/internal/notifications", headers={"Authorization": user.headers["Authorization"]},
                     json={"userId": 1, "type": "job.failed", "title": "x"}).status_code == 403


def test_list_filter_mark_and_delete(make_user, anonymous):
    alice, bob = make_user(), make_user()
    ids = [_post(anonymous, userId=alice.user_id, type=kind, title=kind).get_json()["data"]["notification"]["id"]
           for kind in ("job.failed", "credits.granted", "job.failed")]

    data = alice.get("/api/notifications").get_json()["data"]
    assert [n["id"] for n in data["items"]] == ids[::-1] and data["unreadCount"] == 3
    assert [n["id"] for n in alice.get("/api/notifications?type=job.failed").get_json()["data"]["items"]] == \
        [ids[2], ids[0]]
    page = alice.get("/api/notifications?pageSize=2").get_json()["data"]
    assert page["nextBefore"] == ids[1]
    assert [n["id"] for n in alice.get(f"/api/notifications?before={ids[1]}").get_json()["data"]["items"]] == \
        [ids[0]]

    marked = alice.post(f"/api/notifications/{ids[0]}/read").get_json()["data"]
    assert (marked["notification"]["isRead"], marked["unreadCount"]) == (True, 2)
    assert [n["id"] for n in alice.get("/api/notifications?status=read").get_json()["data"]["items"]] == [ids[0]]
    assert alice.get("/api/notifications/unread-count").get_json()["data"] == {"unreadCount": 2}
    assert bob.post(f"/api/notifications/{ids[1]}/read").status_code == 404
    assert bob.delete(f"/api/notifications/{ids[1]}").status_code == 404

    assert alice.post("/api/notifications/read-all").get_json()["data"] == {"marked": 2, "unreadCount": 0}
    assert alice.delete(f"/api/notifications/{ids[1]}").get_json()["data"]["deleted"] is True
    assert alice.delete(f"/api/notifications/{ids[1]}").status_code == 404
    assert len(alice.get("/api/notifications").get_json()["data"]["items"]) == 2
    for query in ("status=maybe", "pageSize=0", "before=0", "type=BAD"):
        assert alice.get(f"/api/notifications?{query}").status_code == 422
    assert anonymous.get("/api/notifications").status_code == 401


def test_ids_beyond_64_bits_are_404_not_500(make_user):
    user = make_user()
    for note_id in ("9223372036854775808", "99999999999999999999999", "9223372036854775807", "0", "-1"):
        assert user.post(f"/api/notifications/{note_id}/read").status_code == 404, note_id
        assert user.delete(f"/api/notifications/{note_id}").status_code == 404, note_id
    assert user.get("/api/works/9223372036854775808").status_code == 404


def test_a_64_bit_user_id_gets_notifications(anonymous, service_headers, app, issue_token):
    user_id = 2**62 + 12345
    response = _post(anonymous, userId=user_id, type="credits.granted", title="Welcome")
    assert response.status_code == 201
    token = issue_token(user_id, "big_user")
    listed = app.test_client().get("/api/notifications", headers={**service_headers,
                                                                   "Authorization": f"Bearer {token}"})
    assert [note["title"] for note in listed.get_json()["data"]["items"]] == ["Welcome"]
