"""single sign-on: external identities, provider switches, accounts without a password or e-mail

Revision ID: a0004_external_identities
Revises: a0003_display_names
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa
import shared.db

revision = "a0004_external_identities"
down_revision = "a0003_display_names"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.alter_column("password_hash", existing_type=sa.String(length=100), nullable=True)
        batch.alter_column("email", existing_type=sa.String(length=254), nullable=True)

    op.create_table(
        "external_identities",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("email_verified", sa.Boolean(), nullable=False),
        sa.Column("display_name", sa.String(length=100), nullable=False),
        sa.Column("avatar_url", sa.String(length=500), nullable=True),
        sa.Column("department", sa.String(length=200), nullable=False),
        sa.Column("position", sa.String(length=100), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime, nullable=False),
        sa.Column("last_login_at", shared.db.UTCDateTime, nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_external_identities_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_external_identities")),
        sa.UniqueConstraint("provider", "subject", name=op.f("uq_external_identities_provider_subject")),
        sa.UniqueConstraint("user_id", "provider", name=op.f("uq_external_identities_user_id_provider")),
    )
    op.create_index(op.f("ix_external_identities_user_id"), "external_identities", ["user_id"])

    op.create_table(
        "sso_provider_switches",
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_by", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", shared.db.UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("provider", name=op.f("pk_sso_provider_switches")),
    )


def downgrade() -> None:
    op.drop_table("sso_provider_switches")
    op.drop_index(op.f("ix_external_identities_user_id"), table_name="external_identities")
    op.drop_table("external_identities")
    # Accounts made by single sign-on have no password or e-mail; they cannot survive the downgrade.
    op.execute("DELETE FROM users WHERE password_hash IS NULL OR email IS NULL")
    with op.batch_alter_table("users") as batch:
        batch.alter_column("email", existing_type=sa.String(length=254), nullable=False)
        batch.alter_column("password_hash", existing_type=sa.String(length=100), nullable=False)
