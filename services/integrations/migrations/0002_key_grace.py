"""a rotated queue signing key may keep working for a grace period

Revision ID: i0002_key_grace
Revises: i0001_integrations
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa
import shared.db

revision = "i0002_key_grace"
down_revision = "i0001_integrations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("service_accounts") as batch:
        batch.add_column(sa.Column("previous_key_id", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("previous_key_expires_at", shared.db.UTCDateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("service_accounts") as batch:
        batch.drop_column("previous_key_expires_at")
        batch.drop_column("previous_key_id")
