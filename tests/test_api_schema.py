"""Every operation of the public API (``GET /api/openapi.json``), fuzzed by schemathesis as a
signed-in user and as an administrator: no answer may be a 5xx, and every answer must match
the schema the operation documents.

The platform is the authorization matrix's world (the real apps; internal ones over HTTP) with
a live render worker's catalog, so admission runs to the end (no worker consumes the jobs).
Each call carries a freshly signed token of its persona, so a sign-out or a revocation that
one case causes does not turn every later case into a 401. Bounded: a fixed number of
examples per operation and mode, derandomized, without shrinking.
"""
from __future__ import annotations

import datetime as dt
import threading
import uuid
from typing import Iterator

import jwt
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from shared.migrate import SERVICES, upgrade
from tests.conftest import MYSQL_SERVER_URL, create_mysql_database, drop_mysql_database, serve
from tests.test_authorization_matrix import Person, World, running_world

EXAMPLES_PER_MODE = 5
CHECKS = [not_a_server_error, response_schema_conformance]


@pytest.fixture(scope="module")
def own_database_url(db_backend, tmp_path_factory) -> Iterator[str]:
    """A database of its own: other tests' works point at files in their own data folders,
    which this world could not serve."""
    if db_backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('schema-sqlite') / 'schema.db'}"
    else:
        url = create_mysql_database(MYSQL_SERVER_URL)
    for service in SERVICES:
        upgrade(service, url)
    yield url
    if db_backend == "mariadb":
        drop_mysql_database(url)


@pytest.fixture(scope="module")
def api(own_database_url, redis_url, keys_dir, tmp_path_factory) -> Iterator[tuple[World, str]]:
    """The world, its gateway served over HTTP, and a render worker's catalog kept live (as the
    worker's heartbeat would) for the whole run."""
    with running_world(own_database_url, redis_url, keys_dir, tmp_path_factory.mktemp("schema") / "data") as world:
        gateway = serve(world.apps["gateway"])
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(5):
                world.publish_worker()

        world.publish_worker()
        heartbeat = threading.Thread(target=beat)
        heartbeat.start()
        try:
            yield world, gateway.url
        finally:
            stop.set()
            heartbeat.join()
            gateway.stop()
            # The fuzzed term list lives on in Redis, which the session shares: later worlds
            # (the authorization matrix) would filter by it. Without it they read their own database's.
            redis = world.apps["gateway"].extensions["redis"]
            for key in redis.scan_iter(match="safety:terms*"):
                redis.delete(key)


def fresh_token(world: World, person: Person, role: str) -> str:
    now = dt.datetime.now(dt.timezone.utc)
    return jwt.encode({"sub": str(person.id), "username": person.username, "role": role, "type": "access",
                       "jti": uuid.uuid4().hex, "iat": now, "exp": now + dt.timedelta(minutes=15)},
                      world.private_key, algorithm="RS256")


def failures_of(world: World, base_url: str, operation, person: Person, role: str) -> list[str]:
    """Fuzz one operation as one persona; the failures found, as text."""
    failures: list[str] = []

    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        @settings(max_examples=EXAMPLES_PER_MODE, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def fuzz(case) -> None:
            headers = {"Authorization": f"Bearer {fresh_token(world, person, role)}"}
            response = case.call(base_url=base_url, headers=headers)
            try:
                case.validate_response(response, checks=CHECKS, headers=headers)
            except (AssertionError, FailureGroup) as failure:
                failures.append(f"{operation.label} as {role} ({mode.value}): {str(failure)[:1500]}")

        try:
            fuzz()
        except Unsatisfiable:  # nothing to make invalid (an operation without parameters or body)
            assert mode is GenerationMode.NEGATIVE, operation.label
    return failures


def test_every_operation_answers_without_5xx_and_as_documented(api: tuple[World, str]):
    world, base_url = api
    schema = schemathesis.openapi.from_url(f"{base_url}/api/openapi.json")
    personas = [(world.register(), "user"), (world.make_admin(), "admin")]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 50  # the merged spec of the gateway, auth, credits and gallery
    failures = [failure for operation in operations for person, role in personas
                for failure in failures_of(world, base_url, operation, person, role)]
    assert not failures, "\n\n".join(failures)
