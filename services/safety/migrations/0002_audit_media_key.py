"""safety audit: the withheld image a row keeps for moderators

Revision ID: s0002_audit_media_key
Revises: s0001_safety
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa

revision = "s0002_audit_media_key"
down_revision = "s0001_safety"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("safety_audit") as batch:
        batch.add_column(sa.Column("media_key", sa.String(length=200), nullable=True))
    op.create_index("ix_safety_audit_media_key", "safety_audit", ["media_key"])


def downgrade() -> None:
    op.drop_index("ix_safety_audit_media_key", table_name="safety_audit")
    with op.batch_alter_table("safety_audit") as batch:
        batch.drop_column("media_key")
