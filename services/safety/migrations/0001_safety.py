"""the term list and the audit log

Revision ID: s0001_safety
Revises:
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa
import shared.db

revision = "s0001_safety"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "safety_terms",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("text", sa.String(length=200), nullable=False),
        sa.Column("normalised", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("note", sa.String(length=255), nullable=False),
        sa.Column("created_by", sa.BigInteger(), nullable=True),
        sa.Column("created_at", shared.db.UTCDateTime, nullable=False),
        sa.Column("updated_at", shared.db.UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_safety_terms")),
        sa.UniqueConstraint("kind", "normalised", name="uq_safety_terms_kind_normalised"),
    )
    op.create_index("ix_safety_terms_category", "safety_terms", ["category"])
    op.create_table(
        "safety_audit",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", shared.db.UTCDateTime, nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("actor_id", sa.BigInteger(), nullable=True),
        sa.Column("actor_name", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=True),
        sa.Column("severity", sa.String(length=16), nullable=True),
        sa.Column("subject", sa.String(length=100), nullable=False),
        sa.Column("excerpt", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_safety_audit")),
        sa.UniqueConstraint("event_id", name=op.f("uq_safety_audit_event_id")),
    )
    op.create_index("ix_safety_audit_created", "safety_audit", ["created_at"])
    op.create_index("ix_safety_audit_action_created", "safety_audit", ["action", "created_at"])
    op.create_index("ix_safety_audit_actor_created", "safety_audit", ["actor_id", "created_at"])


def downgrade() -> None:
    op.drop_table("safety_audit")
    op.drop_table("safety_terms")
