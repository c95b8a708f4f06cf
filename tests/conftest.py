"""Fixtures every test shares: real Redis, real databases (SQLite, and MariaDB when one
answers), migrated once per session, and typed settings pointing at them.

With ``TEST_REQUIRE_MARIADB=1`` (``.ci/run`` sets it: CI machines run MariaDB) a MariaDB
that does not answer fails the run instead of dropping the MariaDB half of the tests;
``TEST_REQUIRE_RABBITMQ=1`` (also set by ``.ci/run``) does the same for RabbitMQ and the
RabbitMQ half of the render pipeline's and the queue API's end-to-end tests.

Tests that take ``database_url`` run once per backend. Tables are not emptied between
tests: each test makes its own users and rows with unique names (see ``unique``).
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pymysql
import pytest
import requests
from kombu import Connection
from sqlalchemy.engine import make_url
from werkzeug.serving import BaseWSGIServer, make_server

from shared.config import PROJECT_ROOT, Settings, load_settings
from shared.events import redis_client, redis_db, user_channel
from shared.embedded import free_port, redis_answers, redis_server_binary, redis_server_command
from shared.migrate import SERVICES, upgrade
from shared.tokens import ensure_dev_keys

pytest_plugins = ["tests.render_fixtures"]

DEFAULT_MYSQL_URL = "mysql+pymysql://root@127.0.0.1:3306/"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
TEST_SERVICE_TOKEN = "test-service-token"


@dataclass
class RunningServer:
    """A WSGI app served over real HTTP on a free local port, in a background thread."""

    server: BaseWSGIServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(app) -> RunningServer:
    """Serve ``app`` (a stand-in for another service, or a real one) until ``stop()``."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return RunningServer(server, thread)


@contextmanager
def running_process(command: list[str], ready: Callable[[], bool], what: str,
                    timeout: float = 20, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """Start ``command`` (in ``env``, else this environment), wait until ``ready()`` (failing
    the test if it exits or times out), and terminate it afterwards."""
    proc = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{what} did not start")
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def answers(url: str) -> Callable[[], bool]:
    """A readiness check: ``url`` answers an HTTP GET with any status."""
    def check() -> bool:
        try:
            requests.get(url, timeout=1).close()
        except requests.RequestException:
            return False
        return True
    return check


def listen_live(redis_url: str, user_id: int, timeout: float = 0.2) -> Iterator[dict[str, Any] | None]:
    """Yield a user's live events as the gateway hears them; None after each ``timeout`` seconds
    of silence (the first None means the subscription is in place)."""
    client = redis_client(redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(user_channel(user_id, redis_db(client)))
    try:
        while True:
            message = pubsub.get_message(timeout=timeout)
            yield json.loads(message["data"]) if message else None
    finally:
        pubsub.close()


def _mysql_server_url() -> str | None:
    url = os.environ.get("TEST_MYSQL_URL", DEFAULT_MYSQL_URL)
    parsed = make_url(url)
    try:
        pymysql.connect(host=parsed.host, port=parsed.port or 3306, user=parsed.username,
                        password=parsed.password or "", connect_timeout=2).close()
    except pymysql.MySQLError:
        return None
    return url


MYSQL_SERVER_URL = _mysql_server_url()
BACKENDS = ["sqlite"] + (["mariadb"] if MYSQL_SERVER_URL else [])


def _amqp_url() -> str | None:
    """RabbitMQ for the tests that run on both brokers (``TEST_AMQP_URL``), if one answers."""
    url = os.environ.get("TEST_AMQP_URL", DEFAULT_AMQP_URL)
    try:
        with Connection(url, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception:  # any failure to connect means: no RabbitMQ here
        return None
    return url


AMQP_URL = _amqp_url()
# The brokers the broker-dependent tests run on: Redis always, RabbitMQ when one answers.
BROKERS = ["redis"] + (["rabbitmq"] if AMQP_URL else [])


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("TEST_REQUIRE_MARIADB") == "1" and MYSQL_SERVER_URL is None:
        raise pytest.UsageError("TEST_REQUIRE_MARIADB=1, but no MariaDB answers at "
                                f"{os.environ.get('TEST_MYSQL_URL', DEFAULT_MYSQL_URL)}: the MariaDB backend is mandatory")
    if os.environ.get("TEST_REQUIRE_RABBITMQ") == "1" and AMQP_URL is None:
        raise pytest.UsageError("TEST_REQUIRE_RABBITMQ=1, but no RabbitMQ answers at "
                                f"{os.environ.get('TEST_AMQP_URL', DEFAULT_AMQP_URL)}: the RabbitMQ broker is mandatory")


def create_mysql_database(server_url: str) -> str:
    """Create an empty, uniquely named database and return its URL."""
    parsed = make_url(server_url)
    name = f"aigc_test_{uuid.uuid4().hex[:10]}"
    conn = pymysql.connect(host=parsed.host, port=parsed.port or 3306, user=parsed.username,
                           password=parsed.password or "")
    with conn.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    conn.close()
    return parsed.set(database=name).render_as_string(hide_password=False)


def drop_mysql_database(url: str) -> None:
    parsed = make_url(url)
    conn = pymysql.connect(host=parsed.host, port=parsed.port or 3306, user=parsed.username,
                           password=parsed.password or "")
    with conn.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{parsed.database}`")
    conn.close()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """The local Redis if one answers (database 14, flushed), else an embedded one."""
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
    if redis_answers(url):
        import redis
        redis.Redis.from_url(url).flushdb()
        yield url
        return
    binary = redis_server_binary()
    if binary is None:
        pytest.fail("no Redis answers and no redis-server binary is installed")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with running_process(redis_server_command(binary, port, tmp_path_factory.mktemp("redis")),
                         lambda: redis_answers(url), "the embedded redis-server"):
        yield url


@pytest.fixture(scope="session", params=BACKENDS)
def db_backend(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def database_url(db_backend, tmp_path_factory):
    """A database with every service's migrations applied, one per backend per session."""
    if db_backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.db'}"
    else:
        url = create_mysql_database(MYSQL_SERVER_URL)
    for service in SERVICES:
        upgrade(service, url)
    yield url
    if db_backend == "mariadb":
        drop_mysql_database(url)


@pytest.fixture(scope="module")
def platform_database_url(db_backend, tmp_path_factory):
    """An empty database for each module of whole-platform tests, which migrate it themselves. The
    other tests' public works point at files in their own data folders: a platform sharing their
    database would list works whose files it cannot serve, and another module's works would crowd
    the gallery a browser test looks at."""
    if db_backend == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('platform-sqlite') / 'platform.db'}"
        return
    url = create_mysql_database(MYSQL_SERVER_URL)
    yield url
    drop_mysql_database(url)


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture
def settings_env(tmp_path, database_url, redis_url, keys_dir) -> dict[str, str]:
    """Environment for ``load_settings``; tests may extend it before building settings."""
    return {
        "APP_ENV": "test",
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SERVICE_TOKEN": TEST_SERVICE_TOKEN,
        "JWT_PRIVATE_KEY_PATH": str(keys_dir / "jwt_private.pem"),
        "JWT_PUBLIC_KEY_PATH": str(keys_dir / "jwt_public.pem"),
    }


@pytest.fixture
def settings(settings_env) -> Settings:
    loaded = load_settings(settings_env)
    loaded.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_dev_keys(loaded)
    return loaded


@pytest.fixture
def unique() -> str:
    """A short unique suffix for names that must not collide across tests."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def service_headers() -> dict[str, str]:
    return {"X-Service-Token": TEST_SERVICE_TOKEN}


@pytest.fixture
def issue_token(settings):
    """Sign an access token the way auth does, for testing services that only verify."""
    import datetime as dt

    import jwt
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    # Loaded once: parsing the PEM costs tens of milliseconds, signing with the loaded key about one.
    private_key = load_pem_private_key(settings.jwt_private_key_path.read_bytes(), password=None)

    def _issue(user_id: int, username: str, role: str = "user", minutes: int = 15) -> str:
        now = dt.datetime.now(dt.timezone.utc)
        claims = {"sub": str(user_id), "username": username, "role": role, "type": "access",
                  "jti": uuid.uuid4().hex, "iat": now, "exp": now + dt.timedelta(minutes=minutes)}
        return jwt.encode(claims, private_key, algorithm="RS256")

    return _issue
