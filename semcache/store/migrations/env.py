"""Alembic's environment: runs the revisions on the connection ``semcache.store.migrate``
hands over (already inside the transaction that holds the migration lock)."""

from __future__ import annotations

from alembic import context

from semcache.store.migrate import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "semcache's migrations run through `semcache db upgrade` (semcache.store.migrate), "
        "which hands them a connection; there is no alembic.ini"
    )
context.configure(
    connection=connection,
    version_table=VERSION_TABLE,
    # One transaction for every revision (SQLite and PostgreSQL both have transactional DDL):
    # a failed upgrade leaves the database as it was.
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
