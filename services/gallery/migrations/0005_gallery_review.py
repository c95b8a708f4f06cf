"""publishing review: a work's review state, reason, flagged categories, reviewer

Revision ID: g0005_review
Revises: g0004_bigint_user_ids
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa
import shared.db

revision = "g0005_review"
down_revision = "g0004_bigint_user_ids"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("works") as batch:
        batch.add_column(sa.Column("review_state", sa.String(length=16), nullable=False, server_default="none"))
        batch.add_column(sa.Column("review_reason", sa.String(length=500), nullable=True))
        batch.add_column(sa.Column("review_categories", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("reviewed_by", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("reviewed_at", shared.db.UTCDateTime, nullable=True))
        batch.create_index("ix_works_review_state", ["review_state", "created_at"])


def downgrade() -> None:
    with op.batch_alter_table("works") as batch:
        batch.drop_index("ix_works_review_state")
        batch.drop_column("reviewed_at")
        batch.drop_column("reviewed_by")
        batch.drop_column("review_categories")
        batch.drop_column("review_reason")
        batch.drop_column("review_state")
