"""render jobs: queue, variant, graph sent, source image; render_uploads

Revision ID: r0002_queues_uploads
Revises: r0001_render_tables
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa
import shared.db

revision = "r0002_queues_uploads"
down_revision = "r0001_render_tables"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("render_jobs") as batch:
        batch.add_column(sa.Column("queue", sa.String(length=64), nullable=False, server_default="render"))
        batch.add_column(sa.Column("variant", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("graph", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("source_key", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("source_ref", sa.String(length=100), nullable=True))
    op.create_index("ix_render_jobs_user_id_status", "render_jobs", ["user_id", "status"])
    op.create_index("ix_render_jobs_queue_status_created_at", "render_jobs", ["queue", "status", "created_at"])
    op.create_table(
        "render_uploads",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("image_key", sa.String(length=255), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("file_size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_render_uploads")),
    )
    op.create_index(op.f("ix_render_uploads_user_id"), "render_uploads", ["user_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_render_uploads_user_id"), table_name="render_uploads")
    op.drop_table("render_uploads")
    op.drop_index("ix_render_jobs_queue_status_created_at", table_name="render_jobs")
    op.drop_index("ix_render_jobs_user_id_status", table_name="render_jobs")
    with op.batch_alter_table("render_jobs") as batch:
        for column in ("source_ref", "source_key", "graph", "variant", "queue"):
            batch.drop_column(column)
