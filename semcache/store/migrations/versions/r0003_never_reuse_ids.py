"""SQLite: rebuild an entries table made without AUTOINCREMENT, keeping every row.

Without AUTOINCREMENT SQLite hands a deleted top row id to the next insert, and a FAISS index
saved before the delete then holds the old entry's vector under the new entry's id. Files of
the first releases have such a table; the rebuild copies it in the same transaction as the
other revisions (under the migration lock, BEGIN IMMEDIATE), and tells the store to check
every stored vector against its index afterwards. PostgreSQL ids come from an identity column,
never reused: nothing to do there.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import context, op
from sqlalchemy import MetaData, text

from semcache.store.migrations.frozen import entries_table

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_OLD = "entries_before_autoincrement"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    sql = bind.execute(
        text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'entries'")
    ).scalar()
    if sql is None or "AUTOINCREMENT" in str(sql).upper():
        return
    table = entries_table(MetaData(), "sqlite", 0, hit_floor=True)
    names = ", ".join(f'"{c.name}"' for c in table.columns)
    op.execute(f'ALTER TABLE entries RENAME TO "{_OLD}"')
    for index in table.indexes:
        op.execute(f'DROP INDEX IF EXISTS "{index.name}"')
    table.create(bind)
    op.execute(f"INSERT INTO entries ({names}) SELECT {names} FROM {_OLD}")
    op.execute(f"DROP TABLE {_OLD}")
    context.config.attributes["rebuilt_ids"] = True


def downgrade() -> None:
    pass
