"""holds keep their workflow, images and price; expiry index; ledger date index; redeem codes

Revision ID: c0002_prices_redeem
Revises: c0001_credit_tables
Create Date: 2025-12-01
"""
from alembic import op
import sqlalchemy as sa
import shared.db

revision = "c0002_prices_redeem"
down_revision = "c0001_credit_tables"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("credit_holds") as batch:
        batch.add_column(sa.Column("workflow", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("images", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("price_per_image", sa.Integer(), nullable=True))
    op.create_index("ix_credit_holds_status_expires_at", "credit_holds", ["status", "expires_at"])
    op.create_index("ix_credit_ledger_user_id_created_at", "credit_ledger", ["user_id", "created_at"])
    op.create_table(
        "credit_redeem_codes",
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("max_uses", sa.Integer(), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("expires_at", shared.db.UTCDateTime, nullable=True),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_by", sa.BigInteger(), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_credit_redeem_codes")),
    )


def downgrade() -> None:
    op.drop_table("credit_redeem_codes")
    op.drop_index("ix_credit_ledger_user_id_created_at", table_name="credit_ledger")
    op.drop_index("ix_credit_holds_status_expires_at", table_name="credit_holds")
    with op.batch_alter_table("credit_holds") as batch:
        batch.drop_column("price_per_image")
        batch.drop_column("images")
        batch.drop_column("workflow")
