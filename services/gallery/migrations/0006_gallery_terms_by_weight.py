"""work_terms: an index on (term, weight), so a term's rows in titles and tags (or outside
them) are one range of the index (services/gallery/search.py)

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
    op.create_index("ix_work_terms_term_weight", "work_terms", ["term", "weight"])


def downgrade() -> None:
    op.drop_index("ix_work_terms_term_weight", table_name="work_terms")
