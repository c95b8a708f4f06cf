"""a service account's jobs wait in the lane an administrator chose (batch by default)

Revision ID: i0003_account_lane
Revises: i0002_key_grace
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa

revision = "i0003_account_lane"
down_revision = "i0002_key_grace"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("service_accounts") as batch:
        batch.add_column(sa.Column("lane", sa.String(length=16), nullable=False, server_default="batch"))


def downgrade() -> None:
    with op.batch_alter_table("service_accounts") as batch:
        batch.drop_column("lane")
