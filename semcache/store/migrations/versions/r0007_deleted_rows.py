"""SQLite: a tombstone per deleted entry, written by a trigger in the deleting transaction, so
every process on one data dir drops the vectors of rows another process deleted
(``store/sql_sync.py`` ``ForeignDeletes``): a second server's delete, invalidation, sweep or
LRU eviction. Any DELETE on ``entries`` writes one, whoever runs it.

The owner of the index files prunes tombstones older than ``DELETED_ROWS_KEEP_S``. PostgreSQL
has no derived index to keep in step: nothing to do there. A future revision that rebuilds
``entries`` (as 0003 did) drops this trigger with the old table and must create it again.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # seq: AUTOINCREMENT, so tombstones are read in commit order (one writer at a time) and a
    # high-water mark is enough to know which ones a process has seen.
    op.execute(
        "CREATE TABLE IF NOT EXISTS deleted_rows ("
        " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " row_id INTEGER NOT NULL,"
        " partition_key VARCHAR(16) NOT NULL,"
        " deleted_at FLOAT NOT NULL)"
    )
    # julianday('now') rather than unixepoch('subsec'), which needs SQLite 3.42.
    op.execute(
        "CREATE TRIGGER IF NOT EXISTS entries_deleted AFTER DELETE ON entries BEGIN"
        " INSERT INTO deleted_rows (row_id, partition_key, deleted_at)"
        " VALUES (OLD.row_id, OLD.partition_key, (julianday('now') - 2440587.5) * 86400.0);"
        " END"
    )


def downgrade() -> None:
    pass
