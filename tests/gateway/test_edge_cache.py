"""The edge cache in front of a real gallery: what it keeps, for how long, and for whom.

Each test runs a real gallery app over HTTP (its own works, made by the demo generator for
an author no other test uses) behind a gateway whose edge cache is on.
"""
from __future__ import annotations

import time
import uuid
from typing import Callable, Iterator

import pytest
import redis
import requests
from flask import Flask
from sqlalchemy import select, update

from services.gallery.app import create_app as create_gallery
from services.gallery.config import load_config as load_gallery_config
from services.gallery.liked import liked_key
from services.gallery.models import Work
from services.gallery.seed import seed_demo
from services.gateway.client import GENERATION_CHECK_SECONDS, counters_key
from shared.config import load_settings
from shared.db import Database
from shared.tokens import revoked_token_key
from tests.conftest import TEST_SERVICE_TOKEN, serve
from tests.gateway.conftest import build_app, close_app


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.05)


class Stack:
    """A gateway (test client) in front of a served gallery, and one author's works."""

    def __init__(self, gateway: Flask, gallery_url: str, db: Database, author_id: int, issue_token) -> None:
        self.gateway = gateway
        self.client = gateway.test_client()
        self.gallery_url = gallery_url
        self.db = db
        self.author_id = author_id
        self.issue_token = issue_token
        with db.read() as session:
            self.work_ids = list(session.scalars(select(Work.id).where(Work.user_id == author_id)
                                                 .order_by(Work.created_at.desc(), Work.id.desc())))
        self.page = f"/api/works/gallery?authorId={author_id}&pageSize=20"

    def token(self, user_id: int, role: str = "user") -> str:
        return self.issue_token(user_id, f"u{user_id}", role)

    def get(self, path: str, token: str | None = None, **headers: str):
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.get(path, headers=headers, buffered=True)  # closed, so counted, as a server does

    def items(self, token: str | None = None) -> list[dict]:
        response = self.get(self.page, token)
        assert response.status_code == 200, response.get_json()
        return response.get_json()["data"]["items"]

    def cached_bodies(self, namespace: str) -> list[bytes]:
        client = redis.Redis.from_url(self.gateway.config["SETTINGS"].redis_url)
        try:
            return [client.get(key) or b"" for key in client.scan_iter(f"{namespace}:*", _type="string")]
        finally:
            client.close()


@pytest.fixture
def make_stack(gateway_env, issue_token) -> Iterator[Callable[..., Stack]]:
    started: list[tuple[Flask, object, Database]] = []

    def _make(cache_seconds: str = "60", works: int = 3, detail_seconds: str = "60", gallery_env=None,
              **env: str) -> Stack:
        author_id = uuid.uuid4().int % 1_000_000_000 + 1_000_000_000
        db = Database(gateway_env["DATABASE_URL"])
        seed_demo(db, works=works, users=1, likes=0, first_user_id=author_id, seed=author_id, echo=lambda _: None)
        shared = {**gateway_env, "EDGE_DETAIL_SECONDS": detail_seconds}
        gallery_settings = load_settings(shared)
        gallery = serve(create_gallery(gallery_settings, load_gallery_config(gallery_settings, gallery_env or {})))
        gateway = build_app({**shared, "GALLERY_URL": gallery.url, "EDGE_CACHE_SECONDS": cache_seconds, **env})
        started.append((gateway, gallery, db))
        return Stack(gateway, gallery.url, db, author_id, issue_token)

    yield _make
    for gateway, gallery, db in started:
        close_app(gateway)
        gallery.stop()
        db.dispose()


def test_anonymous_reads_come_from_the_cache_with_validators(make_stack):
    stack = make_stack()
    first = stack.get(stack.page)
    second = stack.get(stack.page)
    assert (first.status_code, second.status_code) == (200, 200)
    assert (first.headers["X-Edge-Cache"], second.headers["X-Edge-Cache"]) == ("MISS", "HIT")
    assert first.get_data() == second.get_data() and first.headers["ETag"] == second.headers["ETag"]
    assert second.headers["Vary"] == "Authorization"
    assert second.headers["Cache-Control"].startswith("public, max-age=")
    assert 0 <= int(second.headers["Age"]) <= 60
    # The same query spelled in another order is the same entry.
    reordered = stack.get(f"/api/works/gallery?pageSize=20&authorId={stack.author_id}")
    assert reordered.headers["X-Edge-Cache"] == "HIT" and reordered.headers["ETag"] == first.headers["ETag"]

    unchanged = stack.get(stack.page, **{"If-None-Match": first.headers["ETag"]})
    assert unchanged.status_code == 304 and unchanged.get_data() == b""
    assert unchanged.headers["ETag"] == first.headers["ETag"]
    assert stack.get(stack.page, **{"If-None-Match": '"other"'}).status_code == 200

    detail = f"/api/works/{stack.work_ids[0]}"
    assert stack.get(detail).headers["X-Edge-Cache"] == "MISS"
    hit = stack.get(detail)
    assert hit.headers["X-Edge-Cache"] == "HIT"
    assert hit.get_json()["data"]["work"]["id"] == stack.work_ids[0]
    # Security headers and the request id still come with a cached answer.
    assert hit.headers["X-Content-Type-Options"] == "nosniff" and hit.headers["X-Request-ID"]


def test_the_caches_answers_are_counted_for_metrics(make_stack):
    from prometheus_client import REGISTRY

    def answered(result: str) -> float:
        return REGISTRY.get_sample_value("gateway_edge_cache_total", {"result": result}) or 0.0

    stack = make_stack()
    before = {result: answered(result) for result in ("hit", "miss", "pass")}
    assert stack.get(stack.page).headers["X-Edge-Cache"] == "MISS"
    assert stack.get(stack.page).headers["X-Edge-Cache"] == "HIT"  # in front of Flask
    assert stack.get(f"/api/works/{2 ** 62}").status_code == 404  # not kept
    assert {result: answered(result) - before[result] for result in before} == {"hit": 1, "miss": 1, "pass": 1}


def test_cache_hits_keep_the_edges_duties(make_stack):
    stack = make_stack(RATE_LIMIT_GLOBAL="4/minute", TRUSTED_PROXIES="127.0.0.1/32")
    client = {"X-Forwarded-For": "203.0.113.77"}
    assert stack.get(stack.page, **client).headers["X-Edge-Cache"] == "MISS"
    hit = stack.get(stack.page, **client, **{"X-Request-ID": "edge-req-1"})
    assert hit.headers["X-Edge-Cache"] == "HIT" and hit.headers["X-Request-ID"] == "edge-req-1"
    assert hit.headers["Content-Security-Policy"] and hit.headers["X-Frame-Options"] == "DENY"
    assert stack.get(stack.page, **client, **{"If-None-Match": hit.headers["ETag"]}).status_code == 304
    # Hits count against the address's allowance like any request: the fifth is refused.
    assert stack.get(stack.page, **client).status_code == 200
    refused = stack.get(stack.page, **client)
    assert refused.status_code == 429 and refused.get_json()["error"]["details"]["scope"] == "global:ip"
    assert stack.get(stack.page, **{"X-Forwarded-For": "203.0.113.78"}).headers["X-Edge-Cache"] == "HIT"


def test_edits_hides_features_and_deletes_show_at_once(make_stack):
    stack = make_stack(cache_seconds="300")  # far longer than the test: only invalidation can explain a change
    owner = stack.token(stack.author_id)
    admin = stack.token(uuid.uuid4().int % 1_000_000 + 1, role="admin")
    edited, hidden, deleted = stack.work_ids
    detail = f"/api/works/{edited}"
    assert stack.get(detail).status_code == 200 and stack.get(detail).headers["X-Edge-Cache"] == "HIT"
    assert len(stack.items()) == 3

    new_title = f"renamed {uuid.uuid4().hex[:6]}"
    assert stack.get(detail, owner).status_code == 200
    assert stack.client.put(detail, json={"title": new_title}, headers={"Authorization": f"Bearer {owner}"}
                            ).status_code == 200
    wait_for(lambda: stack.get(detail).get_json()["data"]["work"]["title"] == new_title, "the detail shows the edit")
    wait_for(lambda: new_title in [item["title"] for item in stack.items()], "the page shows the edit")

    assert stack.client.post(f"/api/admin/works/{hidden}/hide", json={"reason": "spam"},
                             headers={"Authorization": f"Bearer {admin}"}).status_code == 200
    wait_for(lambda: hidden not in [item["id"] for item in stack.items()], "the hidden work leaves the page")
    assert stack.get(f"/api/works/{hidden}").status_code == 404

    assert stack.client.put(f"/api/admin/works/{edited}/feature",
                            headers={"Authorization": f"Bearer {admin}"}).status_code == 200
    wait_for(lambda: stack.get(detail).get_json()["data"]["work"]["featured"] is True, "the work shows featured")

    assert stack.client.delete(f"/api/works/{deleted}", headers={"Authorization": f"Bearer {owner}"}
                               ).status_code == 200
    wait_for(lambda: [item["id"] for item in stack.items()] == [edited], "the deleted work leaves the page")
    assert stack.get(f"/api/works/{deleted}").status_code == 404


def test_a_like_shows_within_the_cache_lifetime(make_stack):
    stack = make_stack(cache_seconds="1")
    work_id = stack.work_ids[0]
    before = stack.get(f"/api/works/{work_id}").get_json()["data"]["work"]["likes"]
    fan = stack.token(uuid.uuid4().int % 1_000_000 + 1)
    assert stack.client.put(f"/api/works/{work_id}/like", headers={"Authorization": f"Bearer {fan}"}
                            ).status_code == 200
    wait_for(lambda: stack.get(f"/api/works/{work_id}").get_json()["data"]["work"]["likes"] == before + 1,
             "the detail counts the like")
    wait_for(lambda: {item["id"]: item["likes"] for item in stack.items()}[work_id] == before + 1,
             "the page counts the like")


def test_a_works_details_outlive_the_page_and_show_its_counters_as_they_are(make_stack, gateway_env):
    """Details are kept for EDGE_DETAIL_SECONDS, far longer than a page, and each answer lays
    the work's current likes and views over them: a like or a view shows as soon as the
    gateway next looks (every GENERATION_CHECK_SECONDS), still from the cache; a like that
    makes the work featured shows too."""
    stack = make_stack(cache_seconds="1", detail_seconds="300", gallery_env={"GALLERY_FEATURED_LIKES": "2"})
    work_id = stack.work_ids[0]
    detail = f"/api/works/{work_id}"
    first = stack.get(detail)
    assert first.headers["X-Edge-Cache"] == "MISS"
    before = first.get_json()["data"]["work"]
    assert (before["likes"], before["featured"], before["isLiked"]) == (0, False, False)
    hit = stack.get(detail)
    assert hit.headers["X-Edge-Cache"] == "HIT" and hit.get_data() == first.get_data()
    assert hit.headers["ETag"] == first.headers["ETag"]
    assert hit.headers["Age"] == "0" and hit.headers["Cache-Control"] == "public, max-age=1"
    assert stack.get(stack.page).status_code == 200
    wait_for(lambda: stack.get(stack.page).headers["X-Edge-Cache"] == "MISS", "the page is fetched again")
    assert stack.get(detail).headers["X-Edge-Cache"] == "HIT"  # the details live on

    fan_id = uuid.uuid4().int % 1_000_000 + 1
    fan, other = stack.token(fan_id), stack.token(fan_id + 1)
    assert stack.client.put(f"{detail}/like", headers={"Authorization": f"Bearer {fan}"}).status_code == 200
    time.sleep(GENERATION_CHECK_SECONDS)  # the longest a gateway process takes to look for counted works
    liked = stack.get(detail)
    assert liked.headers["X-Edge-Cache"] == "HIT"
    assert liked.get_json()["data"]["work"] == {**before, "likes": 1}
    assert liked.headers["ETag"] != first.headers["ETag"]
    assert stack.get(detail, **{"If-None-Match": first.headers["ETag"]}).status_code == 200
    assert stack.get(detail, **{"If-None-Match": liked.headers["ETag"]}).status_code == 304
    assert stack.get(detail, fan).get_json()["data"]["work"] == {**before, "likes": 1, "isLiked": True}
    assert stack.get(detail, other).get_json()["data"]["work"] == {**before, "likes": 1}

    assert stack.client.post(f"{detail}/view").status_code == 200
    time.sleep(GENERATION_CHECK_SECONDS)
    viewed = stack.get(detail)
    assert viewed.headers["X-Edge-Cache"] == "HIT"
    assert viewed.get_json()["data"]["work"] == {**before, "likes": 1, "views": before["views"] + 1}

    # The work's counters expired in Redis, then it is counted: the gallery writes the one it
    # counted, and the details are fetched again to fill in the others.
    store = redis.Redis.from_url(gateway_env["REDIS_URL"])
    counters = counters_key(gateway_env["EDGE_CACHE_NAMESPACE"], work_id)
    try:
        store.delete(counters)
        assert stack.client.post(f"{detail}/view", headers={"User-Agent": "another browser"}).status_code == 200
        assert store.hkeys(counters) == [b"views"]
        time.sleep(GENERATION_CHECK_SECONDS)
        refetched = stack.get(detail)
        assert refetched.headers["X-Edge-Cache"] == "MISS"
        assert refetched.get_json()["data"]["work"] == {**before, "likes": 1, "views": before["views"] + 2}
        assert sorted(store.hkeys(counters)) == [b"downloads", b"likes", b"views"]
    finally:
        store.close()
    assert stack.get(detail).headers["X-Edge-Cache"] == "HIT"

    second_fan = stack.token(fan_id + 2)
    assert stack.client.put(f"{detail}/like", headers={"Authorization": f"Bearer {second_fan}"}).status_code == 200
    time.sleep(GENERATION_CHECK_SECONDS)  # the longest a gateway process takes to see the generation move
    featured = stack.get(detail).get_json()["data"]["work"]
    assert (featured["likes"], featured["featured"]) == (2, True)


def test_a_gateway_that_fell_behind_the_counts_reads_every_works_counters_again(make_stack, monkeypatch):
    """The gateway learns which works were counted from a list of the last COUNTED_KEPT; one
    that looks after more were counted cannot tell which, and forgets every work's counters."""
    monkeypatch.setattr("services.gateway.client.COUNTED_KEPT", 2)
    stack = make_stack(works=4, detail_seconds="300")
    first, *others = stack.work_ids
    views = {}
    for work_id in stack.work_ids:
        stack.get(f"/api/works/{work_id}")
        views[work_id] = stack.get(f"/api/works/{work_id}").get_json()["data"]["work"]["views"]
    for work_id in [first, *others]:  # no GET meanwhile: the gateway does not look
        assert stack.client.post(f"/api/works/{work_id}/view").status_code == 200
    time.sleep(GENERATION_CHECK_SECONDS)
    for work_id in stack.work_ids:
        answer = stack.get(f"/api/works/{work_id}")
        assert answer.headers["X-Edge-Cache"] == "HIT"
        assert answer.get_json()["data"]["work"]["views"] == views[work_id] + 1


def test_hidden_unpublished_reviewed_or_deleted_details_are_not_served_after_the_change(make_stack):
    """With details kept for minutes, only the invalidation can take them away: every change
    that takes a work from the public retires its cached details before anyone is answered
    from them again (a gateway process reads the generation every GENERATION_CHECK_SECONDS)."""
    stack = make_stack(cache_seconds="300", detail_seconds="300", works=4,
                       gallery_env={"GALLERY_REVIEW_MODE": "all"})
    owner, reader = stack.token(stack.author_id), stack.token(uuid.uuid4().int % 1_000_000 + 1)
    admin = stack.token(uuid.uuid4().int % 1_000_000 + 1, role="admin")
    hidden, unpublished, reviewed, deleted = stack.work_ids

    for work_id in stack.work_ids:
        stack.get(f"/api/works/{work_id}")
        cached = stack.get(f"/api/works/{work_id}")
        assert cached.headers["X-Edge-Cache"] == "HIT" and "reviewState" not in cached.get_json()["data"]["work"]
        assert stack.get(f"/api/works/{work_id}", reader).headers["X-Edge-Cache"] == "PERSONAL"

    def not_served(work_id: int) -> None:
        time.sleep(GENERATION_CHECK_SECONDS)
        for _ in range(3):
            for token in (None, reader):
                response = stack.get(f"/api/works/{work_id}", token)
                assert response.status_code == 404 and "X-Edge-Cache" not in response.headers

    owner_headers = {"Authorization": f"Bearer {owner}"}
    assert stack.client.post(f"/api/admin/works/{hidden}/hide", json={"reason": "spam"},
                             headers={"Authorization": f"Bearer {admin}"}).status_code == 200
    not_served(hidden)
    assert stack.client.post("/api/works/batch", json={"ids": [unpublished], "action": "unpublish"},
                             headers=owner_headers).status_code == 200
    not_served(unpublished)
    edited = stack.client.put(f"/api/works/{reviewed}", json={"title": "waits for a moderator"},
                              headers=owner_headers)
    assert edited.status_code == 200 and edited.get_json()["data"]["work"]["reviewState"] == "pending"
    not_served(reviewed)
    assert stack.client.delete(f"/api/works/{deleted}", headers=owner_headers).status_code == 200
    not_served(deleted)

    own = stack.get(f"/api/works/{reviewed}", owner)  # its author still sees it, from the gallery
    assert own.status_code == 200 and own.get_json()["data"]["work"]["reviewState"] == "pending"
    assert "X-Edge-Cache" not in own.headers


def test_a_private_work_never_enters_the_cache(make_stack, gateway_env):
    stack = make_stack()
    owner = stack.token(stack.author_id)
    private, public, _ = stack.work_ids
    secret_title = f"secret {uuid.uuid4().hex}"
    response = stack.client.put(f"/api/works/{private}", json={"title": secret_title, "isPublic": False},
                                headers={"Authorization": f"Bearer {owner}"})
    assert response.status_code == 200

    for _ in range(3):
        refused = stack.get(f"/api/works/{private}")
        assert refused.status_code == 404 and "X-Edge-Cache" not in refused.headers
    seen_by_owner = stack.get(f"/api/works/{private}", owner)
    assert seen_by_owner.status_code == 200 and seen_by_owner.get_json()["data"]["work"]["title"] == secret_title
    assert seen_by_owner.headers.get("X-Edge-Cache") is None  # the gallery's own answer, not a cached one
    assert private not in [item["id"] for item in stack.items()]
    assert private not in [item["id"] for item in stack.items(owner)]  # the public gallery lists public works
    assert stack.get(f"/api/works/{public}").status_code == 200

    cached = stack.cached_bodies(gateway_env["EDGE_CACHE_NAMESPACE"])
    assert cached and not any(secret_title.encode() in body for body in cached)
    assert not any(secret_title.encode() in entry.body
                   for entry in stack.gateway.extensions["gateway_public_reads"].cache._local.values())


def test_a_signed_in_users_likes_are_never_served_to_another(make_stack):
    stack = make_stack()
    alice_id, bob_id = (uuid.uuid4().int % 1_000_000 + 1 for _ in range(2))
    alice, bob = stack.token(alice_id), stack.token(bob_id)
    liked = stack.work_ids[1]
    assert stack.client.put(f"/api/works/{liked}/like", headers={"Authorization": f"Bearer {alice}"}
                            ).status_code == 200

    def liked_ids(token: str | None) -> set[int]:
        return {item["id"] for item in stack.items(token) if item["isLiked"]}

    for _ in range(2):  # the second round is served from a warm cache
        assert liked_ids(alice) == {liked}
        assert liked_ids(bob) == set()
        assert liked_ids(None) == set()
        assert stack.get(f"/api/works/{liked}", alice).get_json()["data"]["work"]["isLiked"] is True
        assert stack.get(f"/api/works/{liked}", bob).get_json()["data"]["work"]["isLiked"] is False
        assert stack.get(f"/api/works/{liked}").get_json()["data"]["work"]["isLiked"] is False

    personal = stack.get(stack.page, alice)
    assert personal.headers["X-Edge-Cache"] == "PERSONAL"
    assert personal.headers["Cache-Control"] == "private, no-cache" and "ETag" not in personal.headers
    # What the overlay says is what the gallery itself says to Alice.
    direct = requests.get(stack.gallery_url + stack.page, timeout=10, headers={
        "Authorization": f"Bearer {alice}", "X-Service-Token": TEST_SERVICE_TOKEN})
    assert personal.get_json() == direct.json()
    detail = f"/api/works/{liked}"
    direct_detail = requests.get(stack.gallery_url + detail, timeout=10, headers={
        "Authorization": f"Bearer {alice}", "X-Service-Token": TEST_SERVICE_TOKEN})
    assert stack.get(detail, alice).get_json() == direct_detail.json()


def test_the_viewers_likes_come_from_the_gallerys_set_in_redis(make_stack, monkeypatch):
    """The overlay reads the gallery's set of the viewer's liked works (one SMISMEMBER); only
    when the set is missing does it ask the gallery, which rebuilds it. A like or an unlike
    shows on the user's own next page at once, and never on anyone else's."""
    stack = make_stack()
    gallery = stack.gateway.extensions["gateway_public_reads"].gallery
    asked: list[str] = []
    http_get = gallery.http.get
    monkeypatch.setattr(gallery.http, "get", lambda path, *args, **kwargs: (asked.append(path),
                                                                             http_get(path, *args, **kwargs))[1])
    fan_id, other_id = (uuid.uuid4().int % 1_000_000 + 1 for _ in range(2))
    fan, other = stack.token(fan_id), stack.token(other_id)
    liked = stack.work_ids[2]

    def liked_ids(token: str) -> set[int]:
        return {item["id"] for item in stack.items(token) if item["isLiked"]}

    assert liked_ids(fan) == set() and asked == [f"/internal/users/{fan_id}/liked"]  # no set yet: built now
    assert stack.client.put(f"/api/works/{liked}/like", headers={"Authorization": f"Bearer {fan}"}
                            ).status_code == 200
    assert liked_ids(fan) == {liked}
    assert liked_ids(other) == set() and liked_ids(other) == set()
    assert asked == [f"/internal/users/{fan_id}/liked", f"/internal/users/{other_id}/liked"]

    assert stack.client.delete(f"/api/works/{liked}/like", headers={"Authorization": f"Bearer {fan}"}
                               ).status_code == 200
    assert liked_ids(fan) == set()
    assert stack.client.put(f"/api/works/{liked}/like", headers={"Authorization": f"Bearer {fan}"}
                            ).status_code == 200
    assert len(asked) == 2

    store = redis.Redis.from_url(stack.gateway.config["SETTINGS"].redis_url)
    try:
        store.delete(liked_key(fan_id))  # Redis lost it
        assert liked_ids(fan) == {liked} and asked[2:] == [f"/internal/users/{fan_id}/liked"]
        assert store.exists(liked_key(fan_id))  # rebuilt
        assert liked_ids(fan) == {liked} and len(asked) == 3
    finally:
        store.close()
    assert liked_ids(other) == set()

    monkeypatch.setattr(gallery, "likes", redis.Redis.from_url("redis://127.0.0.1:1/0"))  # the sets unreadable
    assert liked_ids(fan) == {liked} and asked[3:] == [f"/internal/users/{fan_id}/liked"]


def test_a_known_users_hits_are_answered_in_front_of_flask_and_doubts_go_through_it(make_stack):
    stack = make_stack()
    viewer_id = uuid.uuid4().int % 1_000_000 + 1
    token = stack.token(viewer_id)
    liked = stack.work_ids[2]
    assert stack.client.put(f"/api/works/{liked}/like", headers={"Authorization": f"Bearer {token}"}
                            ).status_code == 200
    reads = stack.gateway.extensions["gateway_public_reads"]
    through_flask = []
    answer = reads.answer
    reads.answer = lambda request, fetch: through_flask.append(request.path) or answer(request, fetch)

    def liked_ids() -> set[int]:
        response = stack.get(stack.page, token)
        assert response.headers["X-Edge-Cache"] == "PERSONAL"
        return {item["id"] for item in response.get_json()["data"]["items"] if item["isLiked"]}

    assert liked_ids() == {liked} and len(through_flask) == 1  # first: the page is fetched, the token verified
    assert liked_ids() == {liked} and len(through_flask) == 1  # then: in front of Flask
    detail = stack.get(f"/api/works/{liked}", token)  # fetched once, then in front of Flask
    assert stack.get(f"/api/works/{liked}", token).get_json()["data"]["work"]["isLiked"] is True
    assert detail.get_json()["data"]["work"]["isLiked"] is True and len(through_flask) == 2

    likes = redis.Redis.from_url(stack.gateway.config["SETTINGS"].redis_url)
    try:
        likes.delete(liked_key(viewer_id))  # Redis lost the set: Flask asks the gallery, which rebuilds it
        assert liked_ids() == {liked} and len(through_flask) == 3
        assert liked_ids() == {liked} and len(through_flask) == 3
        other = stack.token(viewer_id + 1)
        assert {item["id"] for item in stack.items(other) if item["isLiked"]} == set()
        assert {item["id"] for item in stack.items(other) if item["isLiked"]} == set()
        claims = stack.gateway.extensions["verified_tokens"].get(token)
        likes.set(revoked_token_key(claims.token_id), "1", ex=60)  # signed out: never answered again
        refused = stack.get(stack.page, token)
        assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "TOKEN_REVOKED"
    finally:
        likes.close()


def test_a_known_users_hit_checks_revocation_and_likes_in_one_round_trip(make_stack, monkeypatch):
    stack = make_stack()
    token = stack.token(uuid.uuid4().int % 1_000_000 + 1)
    assert stack.get(stack.page, token).status_code == 200  # fetched through Flask, the token verified
    sent: list[bytes] = []
    send = redis.connection.Connection.send_packed_command

    def recording(connection, command, *args, **kwargs):
        sent.append(b"".join(command) if isinstance(command, list) else bytes(command))
        return send(connection, command, *args, **kwargs)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", recording)
    assert stack.get(stack.page, token).headers["X-Edge-Cache"] == "PERSONAL"
    checks = [command for command in sent if b"MGET" in command or b"SMISMEMBER" in command]
    assert len(checks) == 1 and b"MGET" in checks[0] and b"SMISMEMBER" in checks[0]


def test_authors_admins_and_bad_tokens_get_the_gallerys_own_answer(make_stack, issue_token):
    stack = make_stack()
    owner = stack.token(stack.author_id)
    own_items = stack.items(owner)
    assert all(item["isOwner"] and item["hidden"] is False for item in own_items)
    assert stack.get(stack.page, owner).headers.get("X-Edge-Cache") is None
    admin = stack.token(uuid.uuid4().int % 1_000_000 + 1, role="admin")
    assert stack.get(stack.page, admin).headers.get("X-Edge-Cache") is None

    expired = issue_token(77, "late", minutes=-1)
    refused = stack.get(stack.page, expired)
    assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "TOKEN_EXPIRED"
    garbage = stack.get(f"/api/works/{stack.work_ids[0]}", "not-a-jwt")
    assert garbage.status_code == 401 and garbage.get_json()["error"]["code"] == "TOKEN_INVALID"


def test_counters_written_directly_still_expire(make_stack):
    """Nothing tells the cache about a counter changed behind the gallery's back: the page's
    lifetime, and that of the work's counters in Redis, bound how stale it gets."""
    stack = make_stack(cache_seconds="1", detail_seconds="1")
    work_id = stack.work_ids[0]
    assert stack.get(f"/api/works/{work_id}").get_json()["data"]["work"]["views"] >= 0
    assert stack.items()
    with stack.db.transaction() as session:
        session.execute(update(Work).where(Work.id == work_id).values(views_count=123_456))
    wait_for(lambda: stack.get(f"/api/works/{work_id}").get_json()["data"]["work"]["views"] == 123_456,
             "the view count catches up")
    wait_for(lambda: {item["id"]: item["views"] for item in stack.items()}[work_id] == 123_456,
             "the page's view count catches up")


def test_without_redis_the_cache_steps_aside(make_stack, gateway_env):
    stack = make_stack()
    broken = build_app({**gateway_env, "GALLERY_URL": stack.gallery_url, "EDGE_CACHE_SECONDS": "60",
                        "REDIS_URL": "redis://127.0.0.1:1/0"})
    try:
        client = broken.test_client()
        for _ in range(2):
            response = client.get(stack.page)
            assert response.status_code == 200 and "X-Edge-Cache" not in response.headers
            assert len(response.get_json()["data"]["items"]) == 3
    finally:
        close_app(broken)
