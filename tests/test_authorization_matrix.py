"""The authorization matrix: every route of auth, credits and gallery, and the gateway's own
``/api`` and ``/internal`` routes, called as each persona, with the status each must get.

Personas: anonymous (no token), owner (owns the resource the route acts on), other (another
user), admin, disabled (a user an admin disabled; the token they held before), expired
(the owner's token, past its expiry), tampered (the owner's token with its claims
edited) and api token (the access token the gateway gets for an API token of the owner with
every scope: it answers as the owner where the route states a scope, ``SCOPED``, 403
``INSUFFICIENT_SCOPE`` where a route reads the caller without one, such as every account
route). One more column: the owner's call without the service token, which every internal
service must refuse (403) except its health probes. And on a scoped route, the owner's API
token with every scope but the one the route's OpenAPI description names (``x-api-token-scope``)
must get 403 ``INSUFFICIENT_SCOPE``: the documented scope is the one the route requires.

The apps are the real ones over real HTTP where they call each other (auth ⇄ credits ⇄
gallery ⇄ integrations, gateway → all four); the only stand-in is the gateway's render-output lookup
the gallery calls (no worker runs here). Users are registered through auth. The route
list is read from each app's ``url_map``: a route without a row here fails
``test_every_route_is_in_the_matrix``.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import re
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import jwt
import pytest
from flask import Flask
from redis import Redis


from services.auth.app import create_app as create_auth_app
from services.auth.config import load_config as load_auth_config
from services.credits.app import create_app as create_credits_app
from services.gallery.app import create_app as create_gallery_app
from services.gateway.app import create_app as create_gateway_app
from services.gateway.config import load_config as load_gateway_config
from services.integrations.app import create_app as create_integrations_app
from services.safety.app import create_app as create_safety_app
from services.integrations.config import load_config as load_integrations_config
from services.integrations.models import WebhookDelivery
from services.render.config import load_config as load_render_config
from services.render import fleet
from services.render.catalog import catalog_key, publish_catalog
from shared.config import load_settings
from shared.db import isoformat, utcnow
from shared.events import redis_client
from shared.tokens import SCOPES, Claims, ensure_dev_keys
from tests.auth.helpers import multipart, picture
from tests.conftest import TEST_SERVICE_TOKEN, serve
from tests.gallery.conftest import FakeGateway, _gateway_app

SERVICE_HEADERS = {"X-Service-Token": TEST_SERVICE_TOKEN}
PASSWORD = "secret123"
PERSONAS = ("anonymous", "owner", "other", "admin", "disabled", "expired", "tampered")
API_TOKEN = "api token"
WITHOUT_SCOPE = "api token without the documented scope"
NO_SERVICE_TOKEN = "without service token"
MATRIX_WORKER = "matrix@worker"
MATRIX_WORKER_NAME = "matrix"
MODEL = "sd15_demo.safetensors"


# Expected statuses by kind of route.

def public(status: int) -> dict[str, int]:
    """The route reads no token: every caller gets the same answer."""
    return dict.fromkeys(PERSONAS, status)


def optional(status: int) -> dict[str, int]:
    """A token is optional, but one that is presented must be valid."""
    return {**public(status), "disabled": 401, "expired": 401, "tampered": 401}


def signed_in(owner: int, other: int | None = None, admin: int | None = None) -> dict[str, int]:
    return {"anonymous": 401, "owner": owner, "other": owner if other is None else other,
            "admin": owner if admin is None else admin, "disabled": 401, "expired": 401, "tampered": 401}


def admins(status: int) -> dict[str, int]:
    return {"anonymous": 401, "owner": 403, "other": 403, "admin": status, "disabled": 401, "expired": 401,
            "tampered": 401}


# The world: real apps, people, and helpers that make fresh resources.

class LateApp:
    """A WSGI app bound after its server starts, so two services can know each other's URL."""

    app: Flask | None = None

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


@dataclass
class Person:
    id: int
    username: str
    token: str


@dataclass
class People:
    owner: Person
    other: Person
    admin: Person
    disabled: Person
    jobs: list[str] = field(default_factory=list)  # render jobs count against a per-user limit: reuse one
    api_token: str | None = None

    def token(self, persona: str, world: World) -> str | None:
        if persona == "anonymous":
            return None
        if persona == API_TOKEN:
            if self.api_token is None:
                self.api_token = world.api_access_token(self.owner)
            return self.api_token
        if persona == "expired":
            return world.expired_token(self.owner)
        if persona == "tampered":
            return tampered(self.owner.token)
        return getattr(self, persona).token


def tampered(token: str) -> str:
    """The same signature over edited claims (role raised to admin)."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    edited = base64.urlsafe_b64encode(json.dumps({**claims, "role": "admin"}).encode()).rstrip(b"=").decode()
    return f"{header}.{edited}.{signature}"


class World:
    def __init__(self, apps: dict[str, Flask], outputs: FakeGateway, private_key: str, redis: Redis) -> None:
        self.apps = apps
        self.outputs = outputs
        self.private_key = private_key
        self.redis = redis
        self.disabled: Person | None = None
        self._shared: People | None = None

    def publish_worker(self) -> None:
        """A live render worker's catalog, so the gateway admits jobs (no worker consumes them)."""
        publish_catalog(self.redis, {
            "workerId": MATRIX_WORKER, "comfyuiUrl": "http://127.0.0.1:9", "comfyuiVersion": "0.3.64",
            "checkpoints": [MODEL], "samplers": ["euler"], "schedulers": ["normal"], "upscale_models": [],
            "workflows": ["text2img"], "slots": 1, "updatedAt": "now"})
        fleet.record(self.redis, {"name": MATRIX_WORKER_NAME, "node": MATRIX_WORKER, "workerId": MATRIX_WORKER,
                                  "state": "active", "lastHeartbeat": isoformat(utcnow())})

    def call(self, service: str, method: str, path: str, token: str | None = None, service_token: bool = True,
             **kwargs: Any):
        headers = dict(SERVICE_HEADERS) if service_token else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        with self.apps[service].test_client().open(path, method=method, headers=headers, **kwargs) as response:
            response.get_data()
            return response

    def ok(self, service: str, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        response = self.call(service, method, path, token, **kwargs)
        assert response.status_code in (200, 201, 202), (path, response.status_code, response.get_json())
        return response.get_json()["data"]

    # People

    def register(self) -> Person:
        name = f"m{uuid.uuid4().hex[:12]}"
        data = self.ok("auth", "POST", "/api/users/register",
                       json={"username": name, "email": f"{name}@example.com", "password": PASSWORD})
        return Person(data["user"]["id"], name, data["accessToken"])

    def make_admin(self) -> Person:
        name = f"a{uuid.uuid4().hex[:12]}"
        self.apps["auth"].extensions["auth"].create_user(name, f"{name}@example.com", PASSWORD, role="admin")
        data = self.ok("auth", "POST", "/api/users/login", json={"username": name, "password": PASSWORD})
        return Person(data["user"]["id"], name, data["accessToken"])

    def shared_people(self) -> People:
        """People for routes that leave them as they were, made once."""
        if self._shared is None:
            self._shared = self.people()
        return self._shared

    def people(self) -> People:
        admin = self.make_admin()
        if self.disabled is None:  # one is enough: nothing a disabled user tries changes anything
            self.disabled = self.register()
            self.ok("auth", "POST", f"/api/admin/users/{self.disabled.id}/disable", admin.token)
        return People(self.register(), self.register(), admin, self.disabled)

    def expired_token(self, person: Person) -> str:
        now = dt.datetime.now(dt.timezone.utc)
        claims = {"sub": str(person.id), "username": person.username, "role": "user", "type": "access",
                  "jti": uuid.uuid4().hex, "iat": now - dt.timedelta(minutes=30),
                  "exp": now - dt.timedelta(minutes=15)}
        return jwt.encode(claims, self.private_key, algorithm="RS256")

    def api_access_token(self, person: Person, scopes: tuple[str, ...] = SCOPES) -> str:
        """What the gateway sends on for an API token of ``person`` with ``scopes`` (every one)."""
        secret = self.ok("auth", "POST", "/api/tokens", person.token,
                         json={"name": "matrix", "scopes": list(scopes)})["token"]
        return self.ok("auth", "POST", "/internal/tokens/exchange", json={"token": secret})["accessToken"]

    def api_token_id(self, person: Person) -> str:
        return self.ok("auth", "POST", "/api/tokens", person.token,
                       json={"name": "matrix", "scopes": ["generate"]})["apiToken"]["id"]

    def service_account(self, admin: Person) -> int:
        name = f"s{uuid.uuid4().hex[:12]}"
        return self.ok("integrations", "POST", "/api/admin/service-accounts", admin.token,
                       json={"name": name, "ownerId": admin.id, "budget": 5})["serviceAccount"]["id"]

    def webhook(self, person: Person) -> int:
        return self.ok("integrations", "POST", "/api/webhooks", person.token,
                       json={"url": "http://127.0.0.1:9/hook", "events": ["job.succeeded"]})["webhook"]["id"]

    def delivery(self, webhook_id: int) -> str:
        """A delivery that was given up (the receiver never answered)."""
        delivery_id = uuid.uuid4().hex
        with self.apps["integrations"].extensions["db"].transaction() as session:
            session.add(WebhookDelivery(id=delivery_id, endpoint_id=webhook_id, event_id=delivery_id,
                                        event_type="job.succeeded", payload="{}", status="failed", attempts=3,
                                        give_up_at=utcnow(), created_at=utcnow()))
        return delivery_id

    def refresh_token(self, person: Person) -> str:
        return self.ok("auth", "POST", "/api/users/login",
                       json={"username": person.username, "password": PASSWORD})["refreshToken"]

    # Resources

    def output(self, person: Person, job_id: str | None = None) -> str:
        return self.outputs.add_output(person.id, storage=self.apps["gallery"].extensions["gallery"].files.storage,
                                       job_id=job_id)

    def work(self, person: Person, public: bool = True) -> int:
        return self.ok("gallery", "POST", "/api/works/save", person.token,
                       json={"outputId": self.output(person), "title": "Matrix", "isPublic": public})["work"]["id"]

    def hidden_work(self, owner: Person, admin: Person) -> int:
        work_id = self.work(owner)
        self.ok("gallery", "POST", f"/api/admin/works/{work_id}/hide", admin.token, json={"reason": "matrix"})
        return work_id

    def report(self, owner: Person, reporter: Person) -> int:
        work_id = self.work(owner)
        return self.ok("gallery", "POST", f"/api/works/{work_id}/report", reporter.token,
                       json={"reason": "matrix"})["report"]["id"]

    def notification(self, person: Person) -> int:
        return self.ok("gallery", "POST", "/internal/notifications", json={
            "userId": person.id, "type": "system.notice", "title": "Matrix",
            "dedupeKey": uuid.uuid4().hex})["notification"]["id"]

    def hold(self, person: Person) -> str:
        job_id = f"matrix-{uuid.uuid4().hex}"
        self.ok("credits", "POST", "/internal/holds",
                json={"userId": person.id, "jobId": job_id, "workflow": "text2img", "images": 1})
        return job_id

    def redeem_code(self, admin: Person) -> str:
        return self.ok("credits", "POST", "/api/admin/credits/redeem-codes", admin.token,
                       json={"amount": 5, "maxUses": 1})["code"]

    def job(self, person: Person) -> str:
        data = self.ok("gateway", "POST", "/api/generate", person.token, service_token=False,
                       json={"prompt": "a matrix", "model": MODEL, "steps": 1})
        return data["job"]["id"]


# The matrix. ``request(world, people)`` returns the path arguments and the request's
# keyword arguments; it runs once per persona, so each call gets fresh resources.

Request = Callable[[World, People], dict[str, Any]]


@dataclass(frozen=True)
class Case:
    service: str
    method: str
    rule: str
    expect: dict[str, int]
    request: Request = lambda world, people: {}
    without_service_token: int | None = 403  # None: a public gateway route, no service token involved
    fresh_people: bool = False  # the route ends the callers' sessions or counts against their limits
    api_token: int | None = None  # the API token's answer, when the owner's own call changed it

    @property
    def id(self) -> str:
        return f"{self.service} {self.method} {self.rule}"


def body(**fields: Any) -> Request:
    return lambda world, people: {"json": fields}


def avatar(world: World, people: People) -> dict[str, Any]:
    return {"data": multipart("avatar", picture("PNG", size=(64, 64))),
            "content_type": "multipart/form-data; boundary=b0undary"}


def image_upload(world: World, people: People) -> dict[str, Any]:
    return {"data": multipart("image", picture("PNG", size=(64, 64))),
            "content_type": "multipart/form-data; boundary=b0undary"}


def fresh_name(world: World, people: People) -> dict[str, Any]:
    name = f"r{uuid.uuid4().hex[:12]}"
    return {"json": {"username": name, "email": f"{name}@example.com", "password": PASSWORD}}


def work_of_owner(world: World, people: People) -> dict[str, Any]:
    return {"work_id": world.work(people.owner)}


def private_work(world: World, people: People) -> dict[str, Any]:
    return {"work_id": world.work(people.owner, public=False)}


def victim(world: World, people: People) -> dict[str, Any]:
    return {"user_id": world.register().id}


def hold_of_owner(world: World, people: People) -> dict[str, Any]:
    return {"job_id": world.hold(people.owner)}


def job_of_owner(world: World, people: People) -> dict[str, Any]:
    if not people.jobs:
        people.jobs.append(world.job(people.owner))
    return {"job_id": people.jobs[0]}


def finished_job_of_owner(world: World, people: People) -> dict[str, Any]:
    job_id = uuid.uuid4().hex
    world.output(people.owner, job_id=job_id)
    return {"json": {"jobId": job_id, "title": "Matrix"}}


def note_of_owner(world: World, people: People) -> dict[str, Any]:
    return {"note_id": world.notification(people.owner)}


def term(world: World, people: People) -> dict[str, Any]:
    """A fresh entry of the term list (a made-up word no other test writes)."""
    terms = world.apps["safety"].extensions["safety_terms"]
    admin = Claims(user_id=people.admin.id, username=people.admin.username, role="admin", token_id="matrix")
    added = terms.create(admin, {"text": f"matrix{uuid.uuid4().hex}", "kind": "term", "category": "other",
                                 "severity": "review", "note": ""})
    return {"term_id": added["id"]}


INTERNAL_SERVICES = ("auth", "credits", "gallery", "integrations", "safety")
HEALTH = [
    Case(service, "GET", path, public(200), without_service_token=200)
    for service in INTERNAL_SERVICES for path in ("/healthz", "/readyz", "/metrics")
] + [Case(service, "GET", "/openapi.json", public(200)) for service in INTERNAL_SERVICES]

AUTH = [
    Case("auth", "POST", "/api/users/register", public(201), fresh_name),
    Case("auth", "POST", "/api/users/login", public(200),
         lambda w, p: {"json": {"username": p.owner.username, "password": PASSWORD}}),
    Case("auth", "POST", "/api/users/token/refresh", public(200),
         lambda w, p: {"json": {"refreshToken": w.refresh_token(p.owner)}}),
    Case("auth", "POST", "/api/users/logout", {**optional(200), "anonymous": 401}, body(), fresh_people=True),
    Case("auth", "GET", "/api/users/profile", signed_in(200)),
    Case("auth", "PUT", "/api/users/profile", signed_in(200), body(bio="matrix")),
    Case("auth", "PUT", "/api/users/password", signed_in(200),
         body(currentPassword=PASSWORD, newPassword="another123"), fresh_people=True,
         api_token=401),  # the owner changed the password just before: every token of theirs stopped
    Case("auth", "POST", "/api/users/password/forgot", public(200), body(email="nobody@example.com")),
    Case("auth", "POST", "/api/users/password/reset", public(400),  # no valid reset token: the link is mailed
         body(token="no-such-token", newPassword="another123")),
    Case("auth", "POST", "/api/users/avatar", signed_in(200), avatar),
    Case("auth", "DELETE", "/api/users/me", signed_in(200), body(password=PASSWORD), fresh_people=True,
         api_token=401),  # the owner deleted the account just before
    Case("auth", "GET", "/api/users/me/export", signed_in(200)),
    Case("auth", "GET", "/api/users/<username>/public", optional(200), lambda w, p: {"username": p.owner.username}),
    Case("auth", "GET", "/api/admin/users", admins(200)),
    Case("auth", "POST", "/api/admin/users/<id:user_id>/disable", admins(200), victim),
    Case("auth", "POST", "/api/admin/users/<id:user_id>/enable", admins(200), victim),
    Case("auth", "PUT", "/api/admin/users/<id:user_id>/role", admins(200),
         lambda w, p: {**victim(w, p), "json": {"role": "admin"}}),
    Case("auth", "GET", "/api/auth/providers", public(200)),
    Case("auth", "POST", "/api/auth/sso/<provider>/start", optional(200), lambda w, p: {"provider": "wecom", "json": {}}),
    Case("auth", "GET", "/api/auth/sso/<provider>/callback", public(302),  # to the web client, with the error
         lambda w, p: {"provider": "wecom", "query_string": {"code": "c", "state": "not-started"}}),
    Case("auth", "POST", "/api/auth/sso/exchange", public(400), body(ticket="spent", binding="b")),
    Case("auth", "POST", "/api/auth/sso/register", public(400), body(ticket="spent", binding="b", username="nobody")),
    Case("auth", "POST", "/api/auth/sso/link", signed_in(400), body(ticket="spent", binding="b")),
    Case("auth", "GET", "/api/users/me/identities", signed_in(200)),
    Case("auth", "DELETE", "/api/users/me/identities/<id:identity_id>", signed_in(404),
         lambda w, p: {"identity_id": 2**62}),
    Case("auth", "GET", "/api/admin/users/<id:user_id>/identities", admins(200), victim),
    Case("auth", "GET", "/api/admin/auth/providers", admins(200)),
    Case("auth", "PUT", "/api/admin/auth/providers/<provider>", admins(200),
         lambda w, p: {"provider": "wecom", "json": {"enabled": True}}),
    Case("auth", "GET", "/api/tokens", signed_in(200)),
    Case("auth", "POST", "/api/tokens", signed_in(201), body(name="matrix", scopes=["generate"])),
    Case("auth", "DELETE", "/api/tokens/<token_id>", signed_in(200, other=404, admin=404),
         lambda w, p: {"token_id": w.api_token_id(p.owner)}),
    Case("auth", "POST", "/internal/tokens/exchange", public(200),
         lambda w, p: {"json": {"token": w.ok("auth", "POST", "/api/tokens", p.owner.token,
                                              json={"name": "matrix", "scopes": ["generate"]})["token"]}}),
    Case("auth", "POST", "/internal/service-accounts", public(201),
         lambda w, p: {"json": {"username": f"s{uuid.uuid4().hex[:12]}"}}),
    Case("auth", "GET", "/internal/users/ids", public(200)),
    Case("auth", "GET", "/internal/users", public(200), lambda w, p: {"query_string": {"ids": str(p.owner.id)}}),
    Case("auth", "GET", "/internal/users/<id:user_id>", public(200), lambda w, p: {"user_id": p.owner.id}),
]

CREDITS = [
    Case("credits", "GET", "/api/credits/pricing", public(200)),
    Case("credits", "POST", "/internal/accounts", public(200), lambda w, p: {"json": {"userId": p.owner.id}}),
    Case("credits", "GET", "/internal/accounts", public(200),
         lambda w, p: {"query_string": {"userIds": str(p.owner.id)}}),
    Case("credits", "POST", "/internal/holds", public(201), lambda w, p: {"json": {
        "userId": p.owner.id, "jobId": f"matrix-{uuid.uuid4().hex}", "workflow": "text2img", "images": 1}}),
    Case("credits", "POST", "/internal/holds/<job_id>/capture", public(200),
         lambda w, p: {**hold_of_owner(w, p), "json": {"images": 1, "idempotencyKey": uuid.uuid4().hex}}),
    Case("credits", "POST", "/internal/holds/<job_id>/release", public(200),
         lambda w, p: {**hold_of_owner(w, p), "json": {"idempotencyKey": uuid.uuid4().hex}}),
    Case("credits", "POST", "/internal/holds/<job_id>/settle", public(200),
         lambda w, p: {**hold_of_owner(w, p), "json": {"images": 1, "idempotencyKey": uuid.uuid4().hex}}),
    Case("credits", "GET", "/api/users/credits", signed_in(200)),
    Case("credits", "GET", "/api/users/credits/stats", signed_in(200)),
    Case("credits", "GET", "/api/users/credits/transactions", signed_in(200)),
    Case("credits", "POST", "/api/users/credits/redeem", signed_in(200),
         lambda w, p: {"json": {"code": w.redeem_code(p.admin)}}),
    Case("credits", "POST", "/api/admin/credits/grant", admins(200),
         lambda w, p: {"json": {"userId": p.owner.id, "amount": 5, "reason": "matrix"}}),
    Case("credits", "POST", "/api/admin/credits/deduct", admins(200),
         lambda w, p: {"json": {"userId": p.owner.id, "amount": 1, "reason": "matrix"}}),
    Case("credits", "GET", "/api/admin/credits/accounts", admins(200)),
    Case("credits", "GET", "/api/admin/credits/accounts/<id:user_id>/transactions", admins(200),
         lambda w, p: {"user_id": p.owner.id}),
    Case("credits", "POST", "/api/admin/credits/redeem-codes", admins(201), body(amount=5, maxUses=1)),
    Case("credits", "GET", "/api/admin/credits/redeem-codes", admins(200)),
    Case("credits", "GET", "/api/admin/credits/redeem-codes/<code>/redemptions", admins(200),
         lambda w, p: {"code": w.redeem_code(p.admin)}),
]

GALLERY = [
    Case("gallery", "POST", "/api/works/save", signed_in(201, other=403, admin=403),
         lambda w, p: {"json": {"outputId": w.output(p.owner), "title": "Matrix"}}),
    Case("gallery", "POST", "/api/works/save-job", signed_in(201, other=403, admin=403), finished_job_of_owner),
    Case("gallery", "POST", "/api/works/batch", signed_in(200, other=404, admin=404),
         lambda w, p: {"json": {"ids": [w.work(p.owner)], "action": "unpublish"}}),
    Case("gallery", "GET", "/api/works/gallery", optional(200)),
    Case("gallery", "GET", "/api/works/my", signed_in(200)),
    Case("gallery", "GET", "/api/works/stats", signed_in(200)),
    Case("gallery", "GET", "/api/works/<id:work_id>", {**optional(200), "anonymous": 404, "other": 404},
         private_work),
    Case("gallery", "PUT", "/api/works/<id:work_id>", signed_in(200, other=403, admin=403),
         lambda w, p: {**work_of_owner(w, p), "json": {"title": "Renamed"}}),
    Case("gallery", "DELETE", "/api/works/<id:work_id>", signed_in(200, other=403, admin=403), work_of_owner),
    Case("gallery", "GET", "/api/works/<id:work_id>/remix", optional(200), work_of_owner),
    Case("gallery", "PUT", "/api/works/<id:work_id>/like", signed_in(200), work_of_owner),
    Case("gallery", "DELETE", "/api/works/<id:work_id>/like", signed_in(200), work_of_owner),
    Case("gallery", "POST", "/api/works/<id:work_id>/like", signed_in(200), work_of_owner),
    Case("gallery", "POST", "/api/works/<id:work_id>/view", optional(200), work_of_owner),
    Case("gallery", "GET", "/api/works/<id:work_id>/download", optional(200), work_of_owner),
    Case("gallery", "POST", "/api/works/verify-label", optional(200),
         lambda w, p: {"data": multipart("file", picture("PNG", size=(64, 64))),
                       "content_type": "multipart/form-data; boundary=b0undary"}),
    Case("gallery", "POST", "/api/works/<id:work_id>/report", signed_in(403, other=201, admin=201),
         lambda w, p: {**work_of_owner(w, p), "json": {"reason": "matrix"}}),
    Case("gallery", "GET", "/api/admin/works", admins(200)),
    Case("gallery", "GET", "/api/admin/works/reports", admins(200)),
    Case("gallery", "GET", "/api/admin/works/review", admins(200)),
    Case("gallery", "POST", "/api/admin/works/review", admins(200),
         lambda w, p: {"json": {"ids": [w.work(p.owner)], "action": "approve"}}),
    Case("gallery", "POST", "/api/admin/works/reports/<id:report_id>/resolve", admins(200),
         lambda w, p: {"report_id": w.report(p.owner, p.other)}),
    Case("gallery", "POST", "/api/admin/works/<id:work_id>/hide", admins(200),
         lambda w, p: {**work_of_owner(w, p), "json": {"reason": "matrix"}}),
    Case("gallery", "POST", "/api/admin/works/<id:work_id>/restore", admins(200),
         lambda w, p: {"work_id": w.hidden_work(p.owner, p.admin)}),
    Case("gallery", "PUT", "/api/admin/works/<id:work_id>/feature", admins(200), work_of_owner),
    Case("gallery", "DELETE", "/api/admin/works/<id:work_id>/feature", admins(200), work_of_owner),
    Case("gallery", "GET", "/api/notifications", signed_in(200)),
    Case("gallery", "GET", "/api/notifications/unread-count", signed_in(200)),
    Case("gallery", "POST", "/api/notifications/<id:note_id>/read", signed_in(200, other=404, admin=404),
         note_of_owner),
    Case("gallery", "POST", "/api/notifications/read-all", signed_in(200)),
    Case("gallery", "DELETE", "/api/notifications/<id:note_id>", signed_in(200, other=404, admin=404),
         note_of_owner),
    Case("gallery", "POST", "/internal/notifications", public(201), lambda w, p: {"json": {
        "userId": p.owner.id, "type": "system.notice", "title": "Matrix", "dedupeKey": uuid.uuid4().hex}}),
    Case("gallery", "GET", "/internal/users/<id:user_id>/stats", public(200), lambda w, p: {"user_id": p.owner.id}),
    Case("gallery", "GET", "/internal/users/<id:user_id>/liked", public(200),
         lambda w, p: {"user_id": p.owner.id, "query_string": {"workIds": "1,2"}}),
    Case("gallery", "GET", "/internal/media/<path:key>/access", public(200),
         lambda w, p: {"key": "images/ab/cd/x.png"}),
    Case("gallery", "POST", "/internal/media/referenced", public(200), body(keys=["images/ab/cd/x.png"])),
]

def service_account(world: World, people: People) -> dict[str, Any]:
    return {"user_id": world.service_account(people.admin)}


def webhook_of_owner(world: World, people: People) -> dict[str, Any]:
    return {"webhook_id": world.webhook(people.owner)}


INTEGRATIONS = [
    Case("integrations", "GET", "/api/admin/service-accounts", admins(200)),
    Case("integrations", "POST", "/api/admin/service-accounts", admins(201),
         lambda w, p: {"json": {"name": f"s{uuid.uuid4().hex[:12]}", "ownerId": p.owner.id, "budget": 5}}),
    Case("integrations", "GET", "/api/admin/service-accounts/<id:user_id>", admins(200), service_account),
    Case("integrations", "PUT", "/api/admin/service-accounts/<id:user_id>", admins(200),
         lambda w, p: {**service_account(w, p), "json": {"maxActiveJobs": 2}}),
    Case("integrations", "POST", "/api/admin/service-accounts/<id:user_id>/key", admins(200), service_account),
    Case("integrations", "POST", "/api/admin/service-accounts/<id:user_id>/budget", admins(200),
         lambda w, p: {**service_account(w, p), "json": {"amount": 5, "reason": "matrix"}}),
    Case("integrations", "GET", "/api/admin/queue-api/dead-letters", admins(200)),
    Case("integrations", "GET", "/api/webhooks", signed_in(200)),
    Case("integrations", "POST", "/api/webhooks", signed_in(201),
         body(url="http://127.0.0.1:9/hook", events=["job.failed"]), fresh_people=True),
    Case("integrations", "DELETE", "/api/webhooks/<id:webhook_id>", signed_in(200, other=404, admin=404),
         webhook_of_owner, fresh_people=True),  # each person may have 20 webhooks
    Case("integrations", "GET", "/api/webhooks/<id:webhook_id>/deliveries", signed_in(200, other=404, admin=404),
         webhook_of_owner, fresh_people=True),
    Case("integrations", "POST", "/api/webhooks/<id:webhook_id>/deliveries/<delivery_id>/redeliver",
         signed_in(200, other=404, admin=404),
         lambda w, p: {"webhook_id": (hook := w.webhook(p.owner)), "delivery_id": w.delivery(hook)},
         fresh_people=True),
    Case("integrations", "GET", "/internal/service-accounts/<id:user_id>/limits", public(200), service_account),
]

GATEWAY = [
    Case("gateway", "POST", "/api/generate", signed_in(202), without_service_token=None,
         request=body(prompt="a matrix", model=MODEL, steps=1)),
    Case("gateway", "GET", "/api/jobs", signed_in(200), without_service_token=None),
    Case("gateway", "GET", "/api/admin/jobs", admins(200), without_service_token=None),
    Case("gateway", "DELETE", "/api/admin/jobs/<job_id>", admins(200), job_of_owner, without_service_token=None),
    Case("gateway", "GET", "/api/admin/models", admins(200), without_service_token=None),
    Case("gateway", "GET", "/api/admin/models/<path:name>", admins(200), lambda w, p: {"name": MODEL},
         without_service_token=None),
    Case("gateway", "PUT", "/api/admin/models/<path:name>", admins(200),
         lambda w, p: {"name": MODEL, "json": {"displayNames": {"zh": "演示模型", "en": "Demo"}}},
         without_service_token=None),
    Case("gateway", "GET", "/api/admin/presets", admins(200), without_service_token=None),
    Case("gateway", "GET", "/api/admin/workers", admins(200), without_service_token=None),
    Case("gateway", "POST", "/api/admin/workers/<name>/drain", admins(200), lambda w, p: {"name": MATRIX_WORKER_NAME},
         without_service_token=None),
    Case("gateway", "POST", "/api/admin/workers/<name>/resume", admins(200), lambda w, p: {"name": MATRIX_WORKER_NAME},
         without_service_token=None),
    Case("gateway", "GET", "/api/admin/render/shares", admins(200), without_service_token=None),
    Case("gateway", "PUT", "/api/admin/render/shares/<id:user_id>", admins(200),
         lambda w, p: {"user_id": p.owner.id, "json": {"weight": 2}}, without_service_token=None),
    Case("gateway", "PUT", "/api/admin/presets", admins(200), lambda w, p: {"json": {"negativePresets": [
        {"key": "quality", "labels": {"zh": "通用画质", "en": "General quality"}, "text": "lowres, blurry"}]}},
         without_service_token=None),
    Case("gateway", "GET", "/api/jobs/<job_id>", signed_in(200, other=404, admin=404), job_of_owner,
         without_service_token=None),
    Case("gateway", "DELETE", "/api/jobs/<job_id>", signed_in(200, other=404, admin=404), job_of_owner,
         without_service_token=None, api_token=409),  # it reaches the job, which the owner cancelled just before
    Case("gateway", "POST", "/api/jobs/<job_id>/retry", signed_in(202, other=404, admin=404), job_of_owner,
         without_service_token=None),
    Case("gateway", "POST", "/api/uploads", signed_in(201), image_upload, without_service_token=None),
    Case("gateway", "GET", "/api/models", optional(200), without_service_token=None),
    Case("gateway", "GET", "/api/health", public(200), without_service_token=None),
    Case("gateway", "GET", "/api/openapi.json", public(200), without_service_token=None),
    Case("gateway", "GET", "/api/docs", public(200), without_service_token=None),
    Case("gateway", "GET", "/internal/outputs/<output_id>", public(404), lambda w, p: {"output_id": "nothing-here"}),
    Case("gateway", "GET", "/internal/jobs", public(200), lambda w, p: {"query_string": {"ids": job_of_owner(w, p)["job_id"]}}),
    Case("gateway", "POST", "/internal/jobs", public(202), lambda w, p: {"json": {
        "userId": p.owner.id, "params": {"prompt": "a matrix", "model": MODEL, "steps": 1},
        "idempotencyKey": uuid.uuid4().hex, "maxActiveJobs": 1000}}),
    Case("gateway", "GET", "/internal/jobs/<job_id>", public(200), job_of_owner),
    Case("gateway", "GET", "/internal/jobs/<job_id>/outputs", public(200), job_of_owner),
]

SAFETY = [
    Case("safety", "GET", "/api/admin/safety/categories", admins(200)),
    Case("safety", "GET", "/api/admin/safety/terms", admins(200)),
    Case("safety", "POST", "/api/admin/safety/terms", admins(201),
         lambda w, p: {"json": {"text": f"matrix{uuid.uuid4().hex}", "category": "other"}}),
    Case("safety", "POST", "/api/admin/safety/terms/bulk", admins(200),
         lambda w, p: {"json": {"items": [{"text": f"matrix{uuid.uuid4().hex}", "category": "ads"}]}}),
    Case("safety", "PUT", "/api/admin/safety/terms/<id:term_id>", admins(200),
         lambda w, p: {**term(w, p), "json": {"severity": "block"}}),
    Case("safety", "DELETE", "/api/admin/safety/terms/<id:term_id>", admins(200), term),
    Case("safety", "POST", "/api/admin/safety/check", admins(200), body(text="matrix")),
    Case("safety", "GET", "/api/admin/safety/audit", admins(200)),
    Case("safety", "GET", "/api/admin/safety/audit/export", admins(200)),
    Case("safety", "GET", "/internal/terms", public(200)),
]

MATRIX = HEALTH + AUTH + CREDITS + GALLERY + INTEGRATIONS + SAFETY + GATEWAY

# Routes an API token may reach (the scope they state); every other route that reads the caller refuses it.
SCOPED = {
    ("credits", "GET", "/api/users/credits"), ("credits", "GET", "/api/users/credits/stats"),
    ("credits", "GET", "/api/users/credits/transactions"),
    ("gallery", "POST", "/api/works/save"), ("gallery", "POST", "/api/works/save-job"),
    ("gallery", "POST", "/api/works/batch"), ("gallery", "GET", "/api/works/gallery"),
    ("gallery", "GET", "/api/works/my"), ("gallery", "GET", "/api/works/stats"),
    ("gallery", "GET", "/api/works/<id:work_id>"), ("gallery", "PUT", "/api/works/<id:work_id>"),
    ("gallery", "DELETE", "/api/works/<id:work_id>"), ("gallery", "GET", "/api/works/<id:work_id>/remix"),
    ("gallery", "POST", "/api/works/<id:work_id>/view"), ("gallery", "GET", "/api/works/<id:work_id>/download"),
    ("gallery", "POST", "/api/works/verify-label"),
    ("integrations", "GET", "/api/webhooks"), ("integrations", "POST", "/api/webhooks"),
    ("integrations", "DELETE", "/api/webhooks/<id:webhook_id>"),
    ("integrations", "GET", "/api/webhooks/<id:webhook_id>/deliveries"),
    ("integrations", "POST", "/api/webhooks/<id:webhook_id>/deliveries/<delivery_id>/redeliver"),
    ("gateway", "POST", "/api/generate"), ("gateway", "GET", "/api/jobs"), ("gateway", "GET", "/api/jobs/<job_id>"),
    ("gateway", "DELETE", "/api/jobs/<job_id>"), ("gateway", "POST", "/api/jobs/<job_id>/retry"),
    ("gateway", "POST", "/api/uploads"), ("gateway", "GET", "/api/models"),
}


def api_token_status(case: Case) -> int:
    """What the owner's API token gets: the owner's answer on a scoped route, the same as
    everyone on a route that reads no token, and 403 INSUFFICIENT_SCOPE on every other."""
    if case.api_token is not None:
        return case.api_token
    if (case.service, case.method, case.rule) in SCOPED:
        return case.expect["owner"]
    if len(set(case.expect.values())) == 1:
        return case.expect["owner"]
    return 403

# Gateway routes outside the matrix, and why.
GATEWAY_EXEMPT = {
    "proxy.": "proxied paths: each is a route of auth, credits or gallery, in the matrix there",
    "static": "the web client's files",
    "openapi.static": "the docs page's script and style sheet",
    "files.web_client": "the web client's pages and files",
    "files.media": "files are reached by signature or publication, never by token (tests/gateway)",
    "__flask_sock.": "the WebSocket authenticates with its own token check (tests/gateway/test_ws.py)",
    "healthz": "probes", "readyz": "probes", "metrics": "Prometheus (METRICS_TOKEN; tests/shared/test_metrics.py)",
}


def exempt(endpoint: str) -> bool:
    return any(endpoint == name or name.endswith(".") and endpoint.startswith(name) for name in GATEWAY_EXEMPT)


@contextmanager
def running_world(database_url: str, redis_url: str, keys_dir: Path, data_dir: Path) -> Iterator[World]:
    """Every app of the platform, the internal ones served over HTTP, the gateway in process."""
    servers = {name: LateApp() for name in INTERNAL_SERVICES}
    running = {name: serve(app) for name, app in servers.items()}
    outputs = FakeGateway()
    running["outputs"] = serve(_gateway_app(outputs))
    unique = uuid.uuid4().hex[:8]
    env = {"APP_ENV": "test", "DATA_DIR": str(data_dir),
           "DATABASE_URL": database_url, "REDIS_URL": redis_url, "SERVICE_TOKEN": TEST_SERVICE_TOKEN,
           "JWT_PRIVATE_KEY_PATH": str(keys_dir / "jwt_private.pem"),
           "JWT_PUBLIC_KEY_PATH": str(keys_dir / "jwt_public.pem"),
           "AUTH_URL": running["auth"].url, "CREDITS_URL": running["credits"].url,
           "GALLERY_URL": running["gallery"].url, "RENDER_URL": running["outputs"].url,
           "INTEGRATIONS_URL": running["integrations"].url, "WEBHOOK_ALLOW_PRIVATE": "true",
           "SAFETY_URL": running["safety"].url,
           "RENDER_QUEUE": f"render-matrix-{unique}", "RATE_LIMIT_NAMESPACE": f"ratelimit-matrix-{unique}",
           "RATE_LIMIT_GLOBAL": "100000/minute", "RATE_LIMIT_GENERATE": "100000/minute",
           # WeCom sign-in is on (its start needs no network; nothing here reaches WeCom).
           "WECHAT_CORP_ID": "wwmatrix", "WECHAT_AGENT_ID": "1", "WECHAT_SECRET": "matrix",
           "WECHAT_API_URL": "http://127.0.0.1:9"}
    settings = load_settings(env)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_dev_keys(settings)
    apps = {"auth": create_auth_app(settings, load_auth_config(settings, env)), "credits": create_credits_app(settings),
            "gallery": create_gallery_app(settings),
            "integrations": create_integrations_app(settings, load_integrations_config(settings, env)),
            "safety": create_safety_app(settings)}
    for name, late in servers.items():
        late.app = apps[name]
    apps["gateway"] = create_gateway_app(settings, load_gateway_config(settings, env), load_render_config(settings, env))
    redis = redis_client(redis_url)
    yield World(apps, outputs, settings.jwt_private_key_path.read_text(), redis)
    redis.delete(catalog_key(MATRIX_WORKER), *redis.keys(f"render-matrix-{unique}.*"), fleet.drain_key(MATRIX_WORKER))
    redis.hdel(fleet.REGISTRY_KEY, MATRIX_WORKER)
    redis.close()
    for server in running.values():
        server.stop()
    gateway = apps["gateway"]
    for name in ("gateway_proxy", "gateway_probes"):
        gateway.extensions[name].close()
    gateway.extensions["gateway_openapi"].services.close()
    gateway.extensions["gateway_fanout"].close()
    gateway.extensions["render"].db.dispose()
    gateway.extensions["redis"].close()
    apps["auth"].extensions["db"].dispose()
    apps["credits"].extensions["db"].dispose()
    apps["gallery"].extensions["db"].dispose()
    apps["integrations"].extensions["db"].dispose()
    apps["safety"].extensions["db"].dispose()
    works = apps["gallery"].extensions["gallery"].works
    works.outputs.close()
    works.authors.close()


@pytest.fixture(scope="module")
def world(database_url, redis_url, keys_dir, tmp_path_factory) -> Iterator[World]:
    with running_world(database_url, redis_url, keys_dir, tmp_path_factory.mktemp("matrix") / "data") as built:
        yield built


def path_of(rule: str, arguments: dict[str, Any]) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda match: str(arguments.pop(match[1])), rule)


@pytest.mark.parametrize("case", MATRIX, ids=lambda case: case.id)
def test_route_answers_each_persona_as_the_matrix_says(world, case):
    people = world.people() if case.fresh_people or case.service == "gateway" else world.shared_people()
    if case.service == "gateway":
        world.publish_worker()  # its catalog expires 30 s after it is written
    seen = {}
    people.token(API_TOKEN, world)  # made before any column can end the owner's sessions
    scope = documented_scope(world, case.service, case.method, case.rule)
    if scope is not None:  # the owner's API token with every scope but the one the spec names
        lacking = world.api_access_token(people.owner, tuple(name for name in SCOPES if name != scope))
    columns = [*PERSONAS, API_TOKEN] + ([NO_SERVICE_TOKEN] if case.without_service_token is not None else [])
    for persona in columns:
        arguments = case.request(world, people)
        path = path_of(case.rule, arguments)
        if persona == NO_SERVICE_TOKEN:
            token, service_token = people.owner.token, False
        else:
            token = people.token(persona, world)
            service_token = case.without_service_token is not None
        seen[persona] = world.call(case.service, case.method, path, token, service_token=service_token,
                                   **arguments).status_code
    expected = {**case.expect, API_TOKEN: api_token_status(case)}
    if case.without_service_token is not None:
        expected[NO_SERVICE_TOKEN] = case.without_service_token
    if scope is not None:
        arguments = case.request(world, people)
        answer = world.call(case.service, case.method, path_of(case.rule, arguments), lacking, **arguments)
        seen[WITHOUT_SCOPE] = (answer.status_code, (answer.get_json(silent=True) or {}).get("error", {}).get("code"))
        expected[WITHOUT_SCOPE] = (403, "INSUFFICIENT_SCOPE")
    assert seen == expected


def documented_scope(world: World, service: str, method: str, rule: str) -> str | None:
    """The API-token scope the OpenAPI description of a route names (``@doc(scope=...)``)."""
    app = world.apps[service]
    for candidate in app.url_map.iter_rules():
        if candidate.rule == rule and method in candidate.methods:
            operation = getattr(app.view_functions[candidate.endpoint], "__openapi__", None)
            return operation.scope if operation is not None else None
    return None


def test_the_spec_names_a_scope_for_exactly_the_routes_an_api_token_may_reach(world):
    documented = set()
    for service, app in world.apps.items():
        for rule in app.url_map.iter_rules():
            documented |= {(service, method, rule.rule) for method in rule.methods - {"HEAD", "OPTIONS"}
                           if documented_scope(world, service, method, rule.rule) is not None}
    assert sorted(documented - SCOPED) == [] and sorted(SCOPED - documented) == []


def test_every_route_is_in_the_matrix(world):
    in_matrix = {(case.service, case.method, case.rule) for case in MATRIX}
    routes = set()
    for service, app in world.apps.items():
        for rule in app.url_map.iter_rules():
            if service == "gateway" and exempt(rule.endpoint):
                continue
            if rule.endpoint == "static":
                continue
            routes |= {(service, method, rule.rule) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert sorted(routes - in_matrix) == [], "routes without a row in the matrix"
    assert sorted(in_matrix - routes) == [], "rows for routes that no longer exist"
    assert len(MATRIX) == len(in_matrix), "a route is in the matrix twice"
