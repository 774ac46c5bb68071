"""entries.hit_floor: the similarity a query must beat to hit the entry (wrong-hit reports).

Was an ALTER on open (store/sqlite.py) before schema versions; files made then already have
the column, so it is added only where missing.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, Float, inspect

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {c["name"] for c in inspect(op.get_bind()).get_columns("entries")}
    if "hit_floor" not in columns:
        op.add_column("entries", Column("hit_floor", Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("entries") as batch:
        batch.drop_column("hit_floor")
