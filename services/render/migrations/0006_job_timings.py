"""render jobs: the timing breakdown (submitted to ComfyUI, first progress, last image)

Queued is ``created_at``, picked ``started_at`` (the current attempt), settled ``settled_at``;
these three fill the steps between, for the admin job view and the render metrics.

Revision ID: r0006_job_timings
Revises: r0005_studio
"""
from alembic import op
import sqlalchemy as sa
import shared.db

revision = "r0006_job_timings"
down_revision = "r0005_studio"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("render_jobs") as batch:
        batch.add_column(sa.Column("submitted_at", shared.db.UTCDateTime, nullable=True))
        batch.add_column(sa.Column("first_progress_at", shared.db.UTCDateTime, nullable=True))
        batch.add_column(sa.Column("last_image_at", shared.db.UTCDateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("render_jobs") as batch:
        batch.drop_column("last_image_at")
        batch.drop_column("first_progress_at")
        batch.drop_column("submitted_at")
