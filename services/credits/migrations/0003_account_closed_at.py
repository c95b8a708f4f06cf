"""credit accounts can be closed (the user was deleted)

Revision ID: c0003_account_closed_at
Revises: c0002_prices_redeem
Create Date: 2025-12-10
"""
from alembic import op
import sqlalchemy as sa
import shared.db

revision = "c0003_account_closed_at"
down_revision = "c0002_prices_redeem"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("credit_accounts") as batch:
        batch.add_column(sa.Column("closed_at", shared.db.UTCDateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("credit_accounts") as batch:
        batch.drop_column("closed_at")
