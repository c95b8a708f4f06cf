"""work_terms: an index on (weight, term), so the rows of a term (or of every term with a
prefix) in titles and tags, or outside them, are one range (services/gallery/search.py)

Revision ID: g0006_terms_by_weight
Revises: g0005_review
Create Date: 2026-12-04
"""
from alembic import op

revision = "g0006_terms_by_weight"
down_revision = "g0005_review"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_work_terms_weight_term", "work_terms", ["weight", "term"])


def downgrade() -> None:
    op.drop_index("ix_work_terms_weight_term", table_name="work_terms")
