"""Fixtures for the auth service: the real credits service over HTTP, a gallery stand-in over
HTTP, the auth app and its client, and accounts that are registered and signed in."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import jwt
import pytest
import redis
from flask import Flask, jsonify, request

from shared.config import load_settings
from shared.tokens import ensure_dev_keys
from services.auth.app import create_app as create_auth_app
from services.auth.config import load_config
from services.credits.app import create_app as create_credits_app
from tests.conftest import TEST_SERVICE_TOKEN, serve

PASSWORD = "secret123"


@pytest.fixture(scope="session")
def base_env(db_backend, database_url, redis_url, keys_dir, tmp_path_factory) -> dict[str, str]:
    """Like ``settings_env``, but one per backend for the session: the apps below are built
    once per backend (building them per test would double the suite's time)."""
    env = {"APP_ENV": "test", "DATA_DIR": str(tmp_path_factory.mktemp(f"auth-{db_backend}") / "data"),
           "DATABASE_URL": database_url, "REDIS_URL": redis_url, "SERVICE_TOKEN": TEST_SERVICE_TOKEN,
           "JWT_PRIVATE_KEY_PATH": str(keys_dir / "jwt_private.pem"),
           "JWT_PUBLIC_KEY_PATH": str(keys_dir / "jwt_public.pem")}
    settings = load_settings(env)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_dev_keys(settings)
    return env


@pytest.fixture(scope="session")
def credits_url(base_env) -> Iterator[str]:
    """The real credits app, served on a free port."""
    app = create_credits_app(load_settings(base_env))
    running = serve(app)
    yield running.url
    running.stop()
    app.extensions["db"].dispose()


@dataclass
class GalleryStandIn:
    """Answers ``GET /api/works/my`` (paged, for the bearer's user id) from ``works`` and
    ``GET /internal/users/<id>/stats`` from ``stats`` (404 for users not in it), checking the
    service token and the caller's RS256 token like the real gallery."""

    public_key_path: Any
    url: str = ""
    works: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    stats: dict[int, dict[str, int]] = field(default_factory=dict)

    def app(self) -> Flask:
        app = Flask("gallery_stand_in")

        def fail(status: int, code: str):
            return jsonify({"success": False, "error": {"code": code, "message": code, "details": None}}), status

        @app.before_request
        def _service_token():
            if request.headers.get("X-Service-Token") != TEST_SERVICE_TOKEN:
                return fail(403, "SERVICE_TOKEN_REQUIRED")
            return None

        @app.get("/api/works/my")
        def my_works():
            token = request.headers.get("Authorization", "").removeprefix("Bearer ")
            try:
                claims = jwt.decode(token, self.public_key_path.read_text(), algorithms=["RS256"])
            except jwt.PyJWTError:
                return fail(401, "TOKEN_INVALID")
            items = self.works.get(int(claims["sub"]), [])
            page, size = int(request.args["page"]), int(request.args["pageSize"])
            return jsonify({"success": True, "data": {"items": items[(page - 1) * size: page * size],
                                                      "page": page, "pageSize": size, "total": len(items)}})

        @app.get("/internal/users/<int:user_id>/stats")
        def user_stats(user_id: int):
            if user_id not in self.stats:
                return fail(404, "NOT_FOUND")
            return jsonify({"success": True, "data": self.stats[user_id]})

        return app


@pytest.fixture(scope="session")
def gallery(keys_dir) -> Iterator[GalleryStandIn]:
    stand_in = GalleryStandIn(keys_dir / "jwt_public.pem")
    running = serve(stand_in.app())
    stand_in.url = running.url
    yield stand_in
    running.stop()


@pytest.fixture(scope="session")
def auth_env(base_env, credits_url, gallery) -> dict[str, str]:
    return {**base_env, "CREDITS_URL": credits_url, "GALLERY_URL": gallery.url}


@pytest.fixture(scope="session")
def auth_settings(auth_env):
    return load_settings(auth_env)


def build_auth_app(env: dict[str, str]) -> Flask:
    """The auth app with its settings and config read from ``env`` alone."""
    settings = load_settings(env)
    return create_auth_app(settings, load_config(settings, env))


@pytest.fixture(scope="session")
def auth_app(auth_env):
    app = build_auth_app(auth_env)
    yield app
    app.extensions["db"].dispose()
    app.extensions["redis"].close()


@pytest.fixture
def client(auth_app):
    return auth_app.test_client()


@pytest.fixture
def redis_conn(redis_url) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url, decode_responses=True)
    yield conn
    conn.close()


@pytest.fixture
def register(client, service_headers, unique):
    """Register a user with valid defaults; keyword arguments override fields."""
    def _register(**fields):
        body = {"username": f"u_{unique}", "email": f"{unique}@example.com", "password": PASSWORD, **fields}
        return client.post("/api/users/register", json=body, headers=service_headers)
    return _register


@dataclass
class Account:
    """A registered user and the pair of tokens of one of their sessions."""

    client: Any
    service_headers: dict[str, str]
    id: int
    username: str
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {**self.service_headers, "Authorization": f"Bearer {self.access_token}"}

    def call(self, method: str, path: str, **kwargs: Any):
        return self.client.open(path, method=method, headers=self.headers, **kwargs)

    def login(self, **extra: Any) -> dict[str, Any]:
        """A second session of the same user: the new pair's data."""
        response = self.client.post("/api/users/login", headers=self.service_headers,
                                    json={"username": self.username, "password": self.password, **extra})
        assert response.status_code == 200, response.json
        return response.json["data"]

    def use(self, data: dict[str, Any]) -> Account:
        self.access_token, self.refresh_token = data["accessToken"], data["refreshToken"]
        return self


@pytest.fixture
def make_account(auth_app, client, service_headers):
    """Register a fresh user (role via the service for admins) and sign them in."""
    def _make(role: str = "user", password: str = PASSWORD) -> Account:
        name = f"a{uuid.uuid4().hex[:12]}"
        email = f"{name}@example.com"
        if role == "user":
            response = client.post("/api/users/register", headers=service_headers,
                                   json={"username": name, "email": email, "password": password})
            assert response.status_code == 201, response.json
            data = response.json["data"]
        else:
            auth_app.extensions["auth"].create_user(name, email, password, role=role)
            data = client.post("/api/users/login", headers=service_headers,
                               json={"username": name, "password": password}).json["data"]
        return Account(client, service_headers, data["user"]["id"], name, email, password,
                       data["accessToken"], data["refreshToken"])
    return _make
