"""The cache tables: entries (with their vectors) and requests (attribution rows).

Creates only what is missing: a SQLite file made before schema versions existed holds some or
all of these tables already (in an older shape that the next revisions bring up to date). On
PostgreSQL the vectors live in a pgvector ``vector(dim)`` column under an HNSW index.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import context, op
from sqlalchemy import MetaData, inspect

from semcache.store.migrations.frozen import HNSW_INDEX, entries_table, requests_table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    dim = int(context.config.attributes.get("vector_dim", 384))
    if dialect == "postgresql":
        # Needs the pgvector extension installed on the server; creating it in a database
        # may need a superuser (or the database owner on PostgreSQL 13+, as a trusted one).
        op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    present = set(inspect(bind).get_table_names())
    tables = MetaData()
    # The first release's entries had no hit_floor: revision 0002 adds it.
    made = (entries_table(tables, dialect, dim, hit_floor=False), requests_table(tables, dialect))
    for table in made:
        if table.name not in present:
            table.create(bind)
    if dialect == "postgresql":
        # m=16, ef_construction=64 are pgvector's defaults; benchmarks/pgvector_search.py
        # measures recall@1 at 100k entries with them.
        op.execute(
            f"CREATE INDEX IF NOT EXISTS {HNSW_INDEX} ON entries "
            "USING hnsw (embedding vector_ip_ops) WITH (m = 16, ef_construction = 64)"
        )


def downgrade() -> None:
    op.drop_table("requests")
    op.drop_table("entries")
