"""The render migrations produce exactly the tables the models describe; r0004 fills the new
job columns from the jobs already stored, and steps down and up again."""
from __future__ import annotations

import json

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from shared.db import make_engine
from shared.migrate import alembic_config, upgrade
from services.render.models import Base
from tests.conftest import MYSQL_SERVER_URL, create_mysql_database, drop_mysql_database


def _differences(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    tables = set(Base.metadata.tables)
    return [item for item in diff if _table_of(item) in tables]


def _table_of(item) -> str | None:
    if isinstance(item, list):
        return item[0][2]
    kind, obj = item[0], item[1]
    if kind.endswith("_table"):
        return obj.name
    if kind.endswith("_index") or kind.endswith("_constraint"):
        return obj.table.name
    return item[2] if len(item) > 2 and isinstance(item[2], str) else None


def test_migrations_match_the_models(database_url):
    assert _differences(database_url) == []


def test_studio_revision_fills_jobs_and_seeds_presets(db_backend, tmp_path):
    url = f"sqlite:///{tmp_path / 'render.db'}" if db_backend == "sqlite" else create_mysql_database(MYSQL_SERVER_URL)
    engine = make_engine(url)
    try:
        upgrade("render", url)
        config = alembic_config("render", url)
        command.downgrade(config, "r0004_job_outbox")
        with engine.begin() as connection:
            for job_id, params in (("a", {"prompt": "A  Red\tFox", "model": "sd15.safetensors"}),
                                   ("b", {"sourceImage": "upload:x"})):
                connection.execute(text(
                    "INSERT INTO render_jobs (id, user_id, workflow, workflow_version, params, price_per_image, "
                    "images_requested, status, cancel_requested, progress, images_delivered, attempts, queue, "
                    "created_at, updated_at) VALUES (:id, 1, 'text2img', 1, :params, 15, 1, 'succeeded', 0, 100, 1, "
                    "1, 'render.text2img', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"),
                    {"id": job_id, "params": json.dumps(params)})
        command.upgrade(config, "head")
        assert _differences(url) == []
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT id, model, search_text FROM render_jobs ORDER BY id")).all()
            presets = connection.execute(text("SELECT kind, COUNT(*) FROM render_presets GROUP BY kind ORDER BY kind")).all()
        assert [tuple(row) for row in rows] == [("a", "sd15.safetensors", "a red fox"), ("b", None, None)]
        assert [tuple(row) for row in presets] == [("negative", 3), ("style", 7)]
    finally:
        engine.dispose()
        if db_backend == "mariadb":
            drop_mysql_database(url)
