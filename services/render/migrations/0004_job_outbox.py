"""render jobs: the outbox of a finished job (settled_at: credits settled; announced_at: final event sent)

Revision ID: r0004_job_outbox
Revises: r0003_outputs_created_at
"""
from alembic import op
import sqlalchemy as sa
import shared.db

revision = "r0004_job_outbox"
down_revision = "r0003_outputs_created_at"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("render_jobs") as batch:
        batch.add_column(sa.Column("settled_at", shared.db.UTCDateTime, nullable=True))
        batch.add_column(sa.Column("announced_at", shared.db.UTCDateTime, nullable=True))
    # Jobs that finished before the outbox was recorded were settled by their worker (or the
    # hold sweeper) and announced then.
    op.execute("UPDATE render_jobs SET settled_at = finished_at, announced_at = finished_at "
               "WHERE status IN ('succeeded', 'failed', 'cancelled')")
    op.create_index("ix_render_jobs_settled_at_status", "render_jobs", ["settled_at", "status"])
    op.create_index("ix_render_jobs_announced_at_status", "render_jobs", ["announced_at", "status"])


def downgrade() -> None:
    op.drop_index("ix_render_jobs_announced_at_status", table_name="render_jobs")
    op.drop_index("ix_render_jobs_settled_at_status", table_name="render_jobs")
    with op.batch_alter_table("render_jobs") as batch:
        batch.drop_column("announced_at")
        batch.drop_column("settled_at")
