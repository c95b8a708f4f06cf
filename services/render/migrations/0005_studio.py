"""the studio: jobs keep their model and searchable prompt for the history's filters; the model
registry and the prompt presets, seeded with the built-in presets

Revision ID: r0005_studio
Revises: r0004_job_outbox
Create Date: 2026-02-10
"""
import json

from alembic import op
import sqlalchemy as sa
import shared.db

revision = "r0005_studio"
down_revision = "r0004_job_outbox"
branch_labels = None
depends_on = None

STYLE_PRESETS = [
    ("photo", "写实摄影", "Photo", "photorealistic, 35mm photo, natural light, high detail"),
    ("cinematic", "电影感", "Cinematic", "cinematic still, dramatic lighting, film grain, shallow depth of field"),
    ("anime", "二次元", "Anime", "anime style, clean line art, vibrant colors"),
    ("guofeng", "国风", "Chinese ink", "traditional Chinese ink painting, guofeng, elegant brush strokes"),
    ("watercolor", "水彩", "Watercolor", "watercolor painting, soft edges, paper texture"),
    ("cyberpunk", "赛博朋克", "Cyberpunk", "cyberpunk, neon lights, futuristic city, night"),
    ("3d", "3D 渲染", "3D render", "3d render, octane render, soft studio lighting"),
]
NEGATIVE_PRESETS = [
    ("quality", "通用画质", "General quality", "lowres, blurry, bad quality, jpeg artifacts, watermark, text"),
    ("anatomy", "人物结构", "Anatomy", "bad anatomy, bad hands, extra fingers, deformed, disfigured"),
    ("clean", "干净画面", "Clean frame", "signature, logo, frame, border, cropped"),
]


def _fold(prompt: str) -> str:
    """The same folding as services.render.jobs.search_text (kept here: a migration is frozen)."""
    return " ".join(prompt.casefold().split())


def upgrade() -> None:
    with op.batch_alter_table("render_jobs") as batch:
        batch.add_column(sa.Column("model", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("search_text", sa.Text(), nullable=True))
    jobs = sa.table("render_jobs", sa.column("id", sa.String), sa.column("params", sa.JSON),
                    sa.column("model", sa.String), sa.column("search_text", sa.Text))
    connection = op.get_bind()
    for job_id, params in connection.execute(sa.select(jobs.c.id, jobs.c.params)).all():
        params = json.loads(params) if isinstance(params, str) else (params or {})
        model, prompt = params.get("model"), params.get("prompt")
        connection.execute(jobs.update().where(jobs.c.id == job_id).values(
            model=model if isinstance(model, str) else None,
            search_text=_fold(prompt) if isinstance(prompt, str) else None))
    op.create_index("ix_render_jobs_user_id_workflow_created_at", "render_jobs", ["user_id", "workflow", "created_at"])
    op.create_index("ix_render_jobs_user_id_model_created_at", "render_jobs", ["user_id", "model", "created_at"])

    op.create_table(
        "render_models",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("display_names", sa.JSON(), nullable=False),
        sa.Column("descriptions", sa.JSON(), nullable=False),
        sa.Column("preview_key", sa.String(length=255), nullable=True),
        sa.Column("recommended", sa.JSON(), nullable=False),
        sa.Column("updated_by", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", shared.db.UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_render_models")),
    )
    presets = op.create_table(
        "render_presets",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("text", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("kind", "key", name=op.f("pk_render_presets")),
    )
    op.bulk_insert(presets, [
        {"kind": kind, "key": key, "position": position, "labels": {"zh": zh, "en": en}, "text": text}
        for kind, rows in (("style", STYLE_PRESETS), ("negative", NEGATIVE_PRESETS))
        for position, (key, zh, en, text) in enumerate(rows)])


def downgrade() -> None:
    op.drop_table("render_presets")
    op.drop_table("render_models")
    op.drop_index("ix_render_jobs_user_id_model_created_at", table_name="render_jobs")
    op.drop_index("ix_render_jobs_user_id_workflow_created_at", table_name="render_jobs")
    with op.batch_alter_table("render_jobs") as batch:
        batch.drop_column("search_text")
        batch.drop_column("model")
