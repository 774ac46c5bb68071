"""Schema versions: run the Alembic revisions in ``migrations/`` on a store's database.

No alembic.ini: the configuration is built here, and the revisions run on a connection that
already holds the migration lock, so two processes opening one database at once never both
migrate it. SQLite takes its write lock (BEGIN IMMEDIATE) for the whole upgrade; PostgreSQL a
transaction-scoped advisory lock. A database whose revision this code does not know (a newer
release upgraded it) is refused, never touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.pool import NullPool

from ..errors import StorageError

__all__ = [
    "DEFAULT_DIM",
    "VERSION_TABLE",
    "SchemaTooNew",
    "Upgrade",
    "current_revision",
    "head_revision",
    "upgrade",
]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "semcache_schema_version"
# The bundled all-MiniLM-L6-v2's dimension: what a PostgreSQL entries table is made for when
# the caller names none.
DEFAULT_DIM = 384
# pg_advisory_xact_lock key of schema upgrades ("semcache" in ASCII).
_PG_LOCK_KEY = 0x73656D6361636865
# How long a process waits for another's upgrade before giving up.
_LOCK_WAIT_S = 300


class SchemaTooNew(StorageError):
    """The database was upgraded by a newer semcache than this one."""

    code = "schema_too_new"


@dataclass(frozen=True)
class Upgrade:
    """What an upgrade did."""

    before: str | None
    after: str
    # Revision 0003 rebuilt a SQLite entries table: every vector must be checked against
    # the FAISS indexes (ids may have been reused before).
    rebuilt_ids: bool = False

    @property
    def changed(self) -> bool:
        return self.before != self.after


def _config(connection: Connection | None = None, dim: int = DEFAULT_DIM) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    config.attributes["vector_dim"] = dim
    return config


def head_revision() -> str:
    """The newest revision this code ships."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    """The database's revision; None before any (an empty database, or a SQLite file made
    before schema versions existed)."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    heads = context.get_current_heads()
    return heads[0] if heads else None


def _refuse_unknown(revision: str | None) -> None:
    if revision is None:
        return
    try:
        ScriptDirectory.from_config(_config()).get_revision(revision)
    except CommandError as exc:
        raise SchemaTooNew(
            f"the database schema is at revision {revision}, newer than this semcache "
            f"knows (its newest is {head_revision()}): run the release that upgraded it, "
            "or point database_url at another database"
        ) from exc


def upgrade(engine: Engine, *, dim: int = DEFAULT_DIM) -> Upgrade:
    """Bring the database to the newest revision, under the migration lock. Raises
    ``SchemaTooNew`` for a database newer than this code; SQLAlchemy errors pass through
    (callers translate them, they know the store's words for it)."""
    if engine.dialect.name == "sqlite":
        locked = _sqlite_immediate(engine)
        try:
            with locked.begin() as conn:
                return _run(conn, dim)
        finally:
            locked.dispose()
    with engine.begin() as conn:
        conn.execute(text(f"SET LOCAL lock_timeout = '{_LOCK_WAIT_S}s'"))
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        return _run(conn, dim)


def _run(conn: Connection, dim: int) -> Upgrade:
    before = current_revision(conn)
    _refuse_unknown(before)
    head = head_revision()
    if before == head:
        return Upgrade(before, head)
    config = _config(conn, dim)
    command.upgrade(config, "head")
    rebuilt = bool(config.attributes.get("rebuilt_ids"))
    log.info("upgraded the store's schema from %s to %s", before or "none", head)
    return Upgrade(before, head, rebuilt)


def _sqlite_immediate(engine: Engine) -> Engine:
    """An engine on the same SQLite file whose transactions begin IMMEDIATE: the write lock is
    taken before the version is read, so a second process waits, then finds it current.
    (pysqlite's own transaction handling would begin lazily, at the first write.)"""
    migrating = create_engine(
        engine.url,
        poolclass=NullPool,
        connect_args={"check_same_thread": False, "timeout": _LOCK_WAIT_S},
    )

    def connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's BEGIN below, not pysqlite's
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    def begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(migrating, "connect", connect)
    event.listen(migrating, "begin", begin)
    return migrating
