"""The studio revision fills the new job columns from the jobs already stored and seeds the presets."""
from __future__ import annotations

import json

from alembic import command
from sqlalchemy import text

from shared.db import make_engine
from shared.migrate import alembic_config, upgrade
from tests.conftest import drop_mysql_database
from tests.test_migrations import differences, own_database


def test_studio_revision_fills_jobs_and_seeds_presets(db_backend, tmp_path):
    url = own_database(db_backend, tmp_path, "render")
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
        assert differences(url, "render") == []
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT id, model, search_text FROM render_jobs ORDER BY id")).all()
            presets = connection.execute(text("SELECT kind, COUNT(*) FROM render_presets GROUP BY kind ORDER BY kind")).all()
        assert [tuple(row) for row in rows] == [("a", "sd15.safetensors", "a red fox"), ("b", None, None)]
        assert [tuple(row) for row in presets] == [("negative", 3), ("style", 7)]
    finally:
        engine.dispose()
        if db_backend == "mariadb":
            drop_mysql_database(url)
