"""works: reproduction data, moderation, search, counters; tags, hits, reports, notifications

Revision ID: 0002_gallery
Revises: 0001_gallery
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa

import shared.db

revision = "0002_gallery"
down_revision = "0001_gallery"
branch_labels = None
depends_on = None

NEW_WORK_COLUMNS = (
    sa.Column("listed", sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.Column("is_hidden", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("hidden_reason", sa.String(length=500), nullable=True),
    sa.Column("hidden_at", shared.db.UTCDateTime, nullable=True),
    sa.Column("featured_at", shared.db.UTCDateTime, nullable=True),
    sa.Column("workflow_version", sa.String(length=32), nullable=True),
    sa.Column("model", sa.String(length=128), nullable=False, server_default=""),
    sa.Column("source_work_id", sa.Integer(), nullable=True),
    sa.Column("graph", sa.JSON(), nullable=True),
    sa.Column("search_text", sa.Text(), nullable=True),
    sa.Column("downloads_count", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("hot_score", sa.Float(), nullable=False, server_default="0"),
)


def upgrade() -> None:
    for column in NEW_WORK_COLUMNS:
        op.add_column("works", column)
    op.execute("UPDATE works SET listed = is_public, search_text = LOWER(title)")
    op.drop_index("ix_works_public_newest", table_name="works")
    op.create_index("ix_works_listed_newest", "works", ["listed", "created_at", "id"])
    op.create_index("ix_works_listed_likes", "works", ["listed", "likes_count", "id"])
    op.create_index("ix_works_listed_views", "works", ["listed", "views_count", "id"])
    op.create_index("ix_works_listed_hot", "works", ["listed", "hot_score", "id"])
    op.create_index("ix_works_image_key", "works", ["image_key"])
    op.create_index("ix_works_thumbnail_key", "works", ["thumbnail_key"])

    op.create_table(
        "work_tags",
        sa.Column("work_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=20), nullable=False),
        sa.PrimaryKeyConstraint("work_id", "tag", name=op.f("pk_work_tags")),
    )
    op.create_index("ix_work_tags_tag_work", "work_tags", ["tag", "work_id"])

    op.create_table(
        "work_hits",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("work_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("viewer", sa.String(length=64), nullable=False),
        sa.Column("counted_at", shared.db.UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_hits")),
        sa.UniqueConstraint("work_id", "kind", "viewer", name=op.f("uq_work_hits_work_id_kind_viewer")),
    )

    op.create_table(
        "work_reports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("work_id", sa.Integer(), nullable=False),
        sa.Column("reporter_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime, nullable=False),
        sa.Column("resolved_at", shared.db.UTCDateTime, nullable=True),
        sa.Column("resolved_by", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_reports")),
        sa.UniqueConstraint("work_id", "reporter_id", name=op.f("uq_work_reports_work_id_reporter_id")),
    )
    op.create_index("ix_work_reports_status", "work_reports", ["status", "id"])
    op.create_index(op.f("ix_work_reports_reporter_id"), "work_reports", ["reporter_id"])

    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.String(length=1000), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("dedupe_key", sa.String(length=128), nullable=True),
        sa.Column("is_read", sa.Boolean(), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime, nullable=False),
        sa.Column("read_at", shared.db.UTCDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint("user_id", "dedupe_key", name=op.f("uq_notifications_user_id_dedupe_key")),
    )
    op.create_index("ix_notifications_user_read", "notifications", ["user_id", "is_read", "id"])


def downgrade() -> None:
    op.drop_index("ix_notifications_user_read", table_name="notifications")
    op.drop_table("notifications")
    op.drop_index(op.f("ix_work_reports_reporter_id"), table_name="work_reports")
    op.drop_index("ix_work_reports_status", table_name="work_reports")
    op.drop_table("work_reports")
    op.drop_table("work_hits")
    op.drop_index("ix_work_tags_tag_work", table_name="work_tags")
    op.drop_table("work_tags")
    for name in ("ix_works_thumbnail_key", "ix_works_image_key", "ix_works_listed_hot",
                 "ix_works_listed_views", "ix_works_listed_likes", "ix_works_listed_newest"):
        op.drop_index(name, table_name="works")
    op.create_index("ix_works_public_newest", "works", ["is_public", "created_at"])
    with op.batch_alter_table("works") as batch:
        for column in reversed(NEW_WORK_COLUMNS):
            batch.drop_column(column.name)
