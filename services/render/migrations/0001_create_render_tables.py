"""create render_jobs and render_outputs

Revision ID: r0001_render_tables
Revises:
Create Date: 2025-11-28
"""
from alembic import op
import sqlalchemy as sa
import shared.db

revision = "r0001_render_tables"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "render_jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("workflow", sa.String(length=64), nullable=False),
        sa.Column("workflow_version", sa.Integer(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("price_per_image", sa.Integer(), nullable=False),
        sa.Column("images_requested", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("comfy_prompt_id", sa.String(length=64), nullable=True),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("images_delivered", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_class", sa.String(length=16), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=True),
        sa.Column("created_at", shared.db.UTCDateTime, nullable=False),
        sa.Column("started_at", shared.db.UTCDateTime, nullable=True),
        sa.Column("finished_at", shared.db.UTCDateTime, nullable=True),
        sa.Column("updated_at", shared.db.UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_render_jobs")),
        sa.UniqueConstraint("user_id", "idempotency_key", name=op.f("uq_render_jobs_user_id_idempotency_key")),
    )
    op.create_index("ix_render_jobs_user_id_created_at", "render_jobs", ["user_id", "created_at"])
    op.create_index("ix_render_jobs_status_created_at", "render_jobs", ["status", "created_at"])
    op.create_table(
        "render_outputs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("image_key", sa.String(length=255), nullable=False),
        sa.Column("thumbnail_key", sa.String(length=255), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("file_size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_render_outputs")),
        sa.UniqueConstraint("job_id", "index", name=op.f("uq_render_outputs_job_id_index")),
    )
    op.create_index(op.f("ix_render_outputs_user_id"), "render_outputs", ["user_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_render_outputs_user_id"), table_name="render_outputs")
    op.drop_table("render_outputs")
    op.drop_index("ix_render_jobs_status_created_at", table_name="render_jobs")
    op.drop_index("ix_render_jobs_user_id_created_at", table_name="render_jobs")
    op.drop_table("render_jobs")
