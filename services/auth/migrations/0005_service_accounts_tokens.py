"""service accounts (users.kind) and API tokens

Revision ID: a0005_service_accounts_tokens
Revises: a0004_external_identities
Create Date: 2026-02-10
"""
from alembic import op
import sqlalchemy as sa
import shared.db

revision = "a0005_service_accounts_tokens"
down_revision = "a0004_external_identities"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=10), nullable=False, server_default="person"))

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.BigInteger(), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime, nullable=False),
        sa.Column("expires_at", shared.db.UTCDateTime, nullable=True),
        sa.Column("last_used_at", shared.db.UTCDateTime, nullable=True),
        sa.Column("revoked_at", shared.db.UTCDateTime, nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index(op.f("ix_api_tokens_user_id"), "api_tokens", ["user_id"])


def downgrade() -> None:
    op.drop_table("api_tokens")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("kind")
