"""the outbox of platform announcements (user.deleted)

Revision ID: a0006_outbox
Revises: a0005_service_accounts_tokens
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa
import shared.db

revision = "a0006_outbox"
down_revision = "a0005_service_accounts_tokens"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "auth_outbox",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("event_type", sa.String(length=40), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_outbox")),
    )


def downgrade() -> None:
    op.drop_table("auth_outbox")
