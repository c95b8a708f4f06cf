"""profile fields, refresh tokens and password-reset tokens

Revision ID: a0002_accounts
Revises: a0001_users
Create Date: 2026-01-20
"""
from alembic import op
import sqlalchemy as sa
import shared.db

revision = "a0002_accounts"
down_revision = "a0001_users"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("website", sa.String(length=200), nullable=False, server_default=""))
        batch.add_column(sa.Column("location", sa.String(length=100), nullable=False, server_default=""))
        batch.add_column(sa.Column("avatar_key", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("new_works_public", sa.Boolean(), nullable=False, server_default=sa.text("1")))
        batch.add_column(sa.Column("profile_visible", sa.Boolean(), nullable=False, server_default=sa.text("1")))

    op.create_table(
        "refresh_tokens",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("family_id", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("access_token_id", sa.String(length=32), nullable=False),
        sa.Column("remember_me", sa.Boolean(), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime, nullable=False),
        sa.Column("expires_at", shared.db.UTCDateTime, nullable=False),
        sa.Column("used_at", shared.db.UTCDateTime, nullable=True),
        sa.Column("revoked_at", shared.db.UTCDateTime, nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_refresh_tokens_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_refresh_tokens_token_hash")),
    )
    op.create_index(op.f("ix_refresh_tokens_user_id"), "refresh_tokens", ["user_id"])
    op.create_index(op.f("ix_refresh_tokens_family_id"), "refresh_tokens", ["family_id"])
    op.create_index(op.f("ix_refresh_tokens_access_token_id"), "refresh_tokens", ["access_token_id"])

    op.create_table(
        "password_reset_tokens",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime, nullable=False),
        sa.Column("expires_at", shared.db.UTCDateTime, nullable=False),
        sa.Column("used_at", shared.db.UTCDateTime, nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_password_reset_tokens_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_password_reset_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_password_reset_tokens_token_hash")),
    )
    op.create_index(op.f("ix_password_reset_tokens_user_id"), "password_reset_tokens", ["user_id"])


def downgrade() -> None:
    op.drop_table("password_reset_tokens")
    op.drop_table("refresh_tokens")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("profile_visible")
        batch.drop_column("new_works_public")
        batch.drop_column("avatar_key")
        batch.drop_column("location")
        batch.drop_column("website")
