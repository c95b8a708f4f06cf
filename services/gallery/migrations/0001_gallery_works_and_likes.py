"""works and likes

Revision ID: 0001_gallery
Revises:
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa

import shared.db

revision = "0001_gallery"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "works",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("author_username", sa.String(length=64), nullable=False),
        sa.Column("output_id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("is_public", sa.Boolean(), nullable=False),
        sa.Column("image_key", sa.String(length=255), nullable=False),
        sa.Column("thumbnail_key", sa.String(length=255), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("file_size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("workflow", sa.String(length=64), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("likes_count", sa.Integer(), nullable=False),
        sa.Column("views_count", sa.Integer(), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime, nullable=False),
        sa.Column("updated_at", shared.db.UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_works")),
        sa.UniqueConstraint("output_id", name=op.f("uq_works_output_id")),
    )
    op.create_index("ix_works_public_newest", "works", ["is_public", "created_at"])
    op.create_index("ix_works_user_newest", "works", ["user_id", "created_at"])

    op.create_table(
        "work_likes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("work_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_likes")),
        sa.UniqueConstraint("work_id", "user_id", name=op.f("uq_work_likes_work_id_user_id")),
    )
    op.create_index(op.f("ix_work_likes_user_id"), "work_likes", ["user_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_work_likes_user_id"), table_name="work_likes")
    op.drop_table("work_likes")
    op.drop_index("ix_works_user_newest", table_name="works")
    op.drop_index("ix_works_public_newest", table_name="works")
    op.drop_table("works")
