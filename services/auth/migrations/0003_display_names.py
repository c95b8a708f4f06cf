"""users.display_name: the name people read, in any script (the login name stays ASCII)

Revision ID: a0003_display_names
Revises: a0002_accounts
Create Date: 2026-02-10
"""
from alembic import op
import sqlalchemy as sa

revision = "a0003_display_names"
down_revision = "a0002_accounts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("display_name", sa.String(length=30), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("display_name")
