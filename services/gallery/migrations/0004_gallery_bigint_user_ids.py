"""user ids are 64-bit, as auth's and credits' are

Revision ID: g0004_bigint_user_ids
Revises: 0003_gallery_search_terms
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa

revision = "g0004_bigint_user_ids"
down_revision = "0003_gallery_search_terms"
branch_labels = None
depends_on = None

USER_ID_COLUMNS = {
    "works": [("user_id", False)],
    "work_likes": [("user_id", False)],
    "work_reports": [("reporter_id", False), ("resolved_by", True)],
    "notifications": [("user_id", False)],
}


def _alter(to: sa.types.TypeEngine, from_: sa.types.TypeEngine) -> None:
    for table, columns in USER_ID_COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for column, nullable in columns:
                batch.alter_column(column, type_=to, existing_type=from_, existing_nullable=nullable)


def upgrade() -> None:
    _alter(sa.BigInteger(), sa.Integer())


def downgrade() -> None:
    _alter(sa.Integer(), sa.BigInteger())
