"""work_terms: the search index of the gallery (services/gallery/search.py), filled for
every existing work

Revision ID: 0003_gallery_search_terms
Revises: 0002_gallery
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from services.gallery.search import term_rows

revision = "0003_gallery_search_terms"
down_revision = "0002_gallery"
branch_labels = None
depends_on = None

BATCH = 5000
works = sa.table("works", sa.column("id", sa.Integer), sa.column("title", sa.String),
                 sa.column("description", sa.String), sa.column("prompt", sa.Text), sa.column("tags", sa.JSON))
work_terms = sa.table("work_terms", sa.column("term", sa.String), sa.column("work_id", sa.Integer),
                      sa.column("weight", sa.SmallInteger))


def upgrade() -> None:
    op.create_table(
        "work_terms",
        sa.Column("term", sa.String(32).with_variant(mysql.VARCHAR(32, collation="utf8mb4_bin"), "mysql", "mariadb"),
                  nullable=False),
        sa.Column("work_id", sa.Integer(), nullable=False),
        sa.Column("weight", sa.SmallInteger(), nullable=False),
        sa.PrimaryKeyConstraint("term", "work_id", name=op.f("pk_work_terms")),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_work_terms_work_id", "work_terms", ["work_id"])
    connection = op.get_bind()
    last = 0
    while True:
        rows = connection.execute(sa.select(works).where(works.c.id > last).order_by(works.c.id).limit(BATCH)).all()
        if not rows:
            break
        terms = [term for row in rows
                 for term in term_rows(row.id, row.title, row.description or "", row.prompt or "", row.tags or [])]
        if terms:
            connection.execute(sa.insert(work_terms), terms)
        last = rows[-1].id


def downgrade() -> None:
    op.drop_index("ix_work_terms_work_id", table_name="work_terms")
    op.drop_table("work_terms")
