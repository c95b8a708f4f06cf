"""The auth migrations produce exactly the tables the models describe, and step down and up again."""
from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from shared.db import make_engine
from shared.migrate import alembic_config, upgrade
from services.auth.models import Base
from tests.conftest import MYSQL_SERVER_URL, create_mysql_database, drop_mysql_database


def _differences(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    # Other services' tables (and their indexes) live in the same database; only auth's own count here.
    return [item for item in diff if _table_of(item) in Base.metadata.tables]


def _table_of(item) -> str | None:
    if isinstance(item, list):  # column modifications come as a list of ("modify_*", schema, table, ...)
        return item[0][2]
    kind, obj = item[0], item[1]
    if kind.endswith("_table"):
        return obj.name
    if kind.endswith("_index") or kind.endswith("_constraint"):
        return obj.table.name
    return item[2] if len(item) > 2 and isinstance(item[2], str) else None


def test_migrations_match_the_models(database_url):
    assert _differences(database_url) == []


def test_second_revision_downgrades_and_upgrades(db_backend, tmp_path):
    """On a database of its own: other tests share the session's database."""
    url = f"sqlite:///{tmp_path / 'auth.db'}" if db_backend == "sqlite" else create_mysql_database(MYSQL_SERVER_URL)
    try:
        upgrade("auth", url)
        config = alembic_config("auth", url)
        command.downgrade(config, "a0001_users")
        command.upgrade(config, "head")
        assert _differences(url) == []
    finally:
        if db_backend == "mariadb":
            drop_mysql_database(url)
