"""Every service's migrations produce exactly the tables its models describe, and every
history steps down to its first revision and up again."""
from __future__ import annotations

import importlib

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from shared.db import make_engine
from shared.migrate import SERVICES, alembic_config, upgrade
from tests.conftest import MYSQL_SERVER_URL, create_mysql_database, drop_mysql_database


def differences(url: str, service: str) -> list:
    """What autogenerate would change in ``service``'s own tables (the database may hold others')."""
    metadata = importlib.import_module(f"services.{service}.models").Base.metadata
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    return [item for item in diff if _table_of(item) in metadata.tables]


def _table_of(item) -> str | None:
    if isinstance(item, list):  # column modifications come as a list of ("modify_*", schema, table, ...)
        return item[0][2]
    kind, obj = item[0], item[1]
    if kind.endswith("_table"):
        return obj.name
    if kind.endswith("_index") or kind.endswith("_constraint"):
        return obj.table.name
    return item[2] if len(item) > 2 and isinstance(item[2], str) else None


def own_database(db_backend: str, tmp_path, name: str) -> str:
    """A database of the test's own: other tests share the session's database."""
    if db_backend == "sqlite":
        return f"sqlite:///{tmp_path / name}.db"
    return create_mysql_database(MYSQL_SERVER_URL)


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_match_the_models(database_url, service):
    assert differences(database_url, service) == []


@pytest.mark.parametrize("service", SERVICES)
def test_each_history_has_one_head_and_steps_down_and_up(db_backend, tmp_path, service):
    url = own_database(db_backend, tmp_path, service)
    try:
        config = alembic_config(service, url)
        script = ScriptDirectory.from_config(config)
        assert len(script.get_heads()) == 1, f"{service} has several heads: {script.get_heads()}"
        upgrade(service, url)
        command.downgrade(config, "base")
        command.upgrade(config, "head")
        assert differences(url, service) == []
    finally:
        if db_backend == "mariadb":
            drop_mysql_database(url)
