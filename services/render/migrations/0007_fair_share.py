"""render jobs: the fair-share scheduler's lane and weight; administrators' per-user weights

Revision ID: r0007_fair_share
Revises: r0006_job_timings
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa
import shared.db

revision = "r0007_fair_share"
down_revision = "r0006_job_timings"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("render_jobs") as batch:
        batch.add_column(sa.Column("lane", sa.String(16), nullable=False, server_default="interactive"))
        batch.add_column(sa.Column("share_weight", sa.Float(), nullable=False, server_default="1"))
    op.create_table(
        "render_user_shares",
        sa.Column("user_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("updated_by", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", shared.db.UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("render_user_shares")
    with op.batch_alter_table("render_jobs") as batch:
        batch.drop_column("share_weight")
        batch.drop_column("lane")
