"""flights: which replica is making the upstream call for an exact key (cross-replica
single-flight on PostgreSQL; a SQLite store has one process and never uses it).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, Float, String, inspect

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "flights" in inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "flights",
        Column("exact_key", String(32), primary_key=True),
        Column("owner", String(64), nullable=False),
        # Database time (epoch seconds) past which the claim no longer holds: a replica that
        # died holding it blocks the others at most until then.
        Column("expires_at", Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("flights")
