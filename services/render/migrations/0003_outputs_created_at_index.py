"""Index outputs by creation time, for the retention sweep.

Revision ID: r0003_outputs_created_at
Revises: r0002_queues_uploads
"""
from alembic import op

revision = "r0003_outputs_created_at"
down_revision = "r0002_queues_uploads"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_render_outputs_created_at", "render_outputs", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_render_outputs_created_at", table_name="render_outputs")
