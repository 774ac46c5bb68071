"""SQLite plumbing of the embedded store: the engine, checks on open, error reasons.

Kept apart from ``sql_faiss`` (what the store does) because none of it is cache logic: it is
what makes one SQLite file safe to serve from. Foreign errors are translated here, so the
messages clients see name the cause ("database is locked") and never SQLAlchemy's statement
text or its documentation link.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, select, text
from sqlalchemy.exc import SQLAlchemyError

from ..errors import StorageError
from .migrate import Upgrade, upgrade
from .schema import entries
from .vectors import INDEX_SUFFIXES

__all__ = [
    "SqliteAccess",
    "StoreOptions",
    "is_damage",
    "make_engine",
    "open_schema",
    "storage_error",
]

log = logging.getLogger(__name__)

# SQLite's primary result codes (the low byte of an extended code).
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6


@dataclass(frozen=True)
class StoreOptions:
    """How the embedded store waits for locks and judges its disk."""

    # A write waits this long for SQLite's write lock (another process, a long write) before
    # failing with 503 store_busy; reads never wait for it (WAL, and their own worker pool).
    write_timeout_s: float = 5.0
    # /readyz answers 503 when the data dir's filesystem has less free space than this.
    min_free_disk_mb: float = 64.0


def make_engine(url: str, options: StoreOptions) -> Engine:
    """A SQLAlchemy engine; for SQLite one with WAL, fsync on commit and a bounded busy wait."""
    if url.startswith("postgresql"):
        # `semcache report` and `db current` over the shared store: its engine, its settings.
        from .pg_engine import PostgresOptions, make_pg_engine

        return make_pg_engine(url, PostgresOptions(write_timeout_s=options.write_timeout_s))
    try:
        if not url.startswith("sqlite"):
            return create_engine(url, pool_pre_ping=True)
        busy_ms = int(options.write_timeout_s * 1000)

        def pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets lookups read while a store writes. synchronous=FULL fsyncs the WAL at
            # every commit: an entry acknowledged with 201 survives a crash of the process or
            # the machine.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            # A write blocked by another process's lock waits this long, then answers 503
            # store_busy instead of holding a worker for good.
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.close()

        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": options.write_timeout_s},
            # Reads, writes, the hit flush, the sweeper and attribution each hold a connection;
            # a pool smaller than that would make reads queue for one behind blocked writes.
            pool_size=16,
            max_overflow=16,
        )
        event.listen(engine, "connect", pragmas)
        return engine
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise StorageError(f"cannot use database URL {url!r}: {exc}") from exc


def sqlite_code(exc: BaseException) -> int | None:
    """SQLite's primary result code behind a (SQLAlchemy-wrapped) error, if there is one."""
    orig = getattr(exc, "orig", exc)
    code = getattr(orig, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def is_damage(exc: BaseException) -> bool:
    """Whether the error says the database file itself is damaged."""
    return sqlite_code(exc) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def storage_error(action: str, exc: SQLAlchemyError) -> StorageError:
    """A ``StorageError`` naming the cause in a few words (the full error goes to the log)."""
    if type(getattr(exc, "orig", None)).__module__.startswith("psycopg"):
        # Shared code (attribution rows) over a PostgreSQL engine.
        from .postgres import pg_storage_error

        return pg_storage_error(action, exc)
    log.warning("%s: %s", action, exc)
    code = sqlite_code(exc)
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return StorageError(
            f"{action}: the database is locked by another writer; retry shortly",
            code="store_busy",
            headers={"Retry-After": "1"},
        )
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return StorageError(
            f"{action}: the database file is damaged; the server needs an operator "
            "(see the README, Durability)",
            code="store_damaged",
        )
    if code == _SQLITE_FULL:
        return StorageError(f"{action}: the disk is full", code="store_full")
    orig = getattr(exc, "orig", None)
    reason = str(orig) if orig is not None else type(exc).__name__
    return StorageError(f"{action}: {reason}")


class SqliteAccess:
    """One engine as the embedded store uses it: reads, one writer at a time, errors
    translated, and writes refused once SQLite reports the file damaged."""

    def __init__(self, url: str, options: StoreOptions) -> None:
        self.options = options
        self.engine = make_engine(url, options)
        # SQLite has one writer at a time; serialising writes here keeps SQL and the vector
        # indexes changing in the same order and avoids SQLITE_BUSY on lock upgrades.
        self._write_lock = threading.Lock()
        # Set when SQLite reports the file damaged while serving: from then on the store
        # refuses writes (they could spread the damage) and /readyz reports it.
        self.damaged: str | None = None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise self._failed("store read failed", exc) from exc

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the write lock, waiting at most ``write_timeout_s`` for it."""
        if self.damaged is not None:
            raise StorageError(
                f"the store is read-only: {self.damaged}; restart to check the file",
                code="store_damaged",
            )
        if not self._write_lock.acquire(timeout=self.options.write_timeout_s):
            raise StorageError(
                f"the store is busy: a write waited {self.options.write_timeout_s:g} s for the "
                "write lock (another process, or a long write, holds it); retry shortly",
                code="store_busy",
                headers={"Retry-After": "1"},
            )
        try:
            yield
        finally:
            self._write_lock.release()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One committed transaction; callers hold ``writing`` around it."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise self._failed("store write failed; nothing was written", exc) from exc

    def check(self, data_dir: Path) -> None:
        """Raise ``StorageError`` unless the file answers, is not damaged, and ``data_dir``'s
        disk has ``min_free_disk_mb`` free."""
        if self.damaged is not None:
            raise StorageError(f"the store is read-only: {self.damaged}", code="store_damaged")
        with self.read() as conn:
            conn.execute(select(1)).scalar_one()
        try:
            free_mb = shutil.disk_usage(data_dir).free / 2**20
        except OSError as exc:
            raise StorageError(f"cannot read the data dir's free space: {exc.strerror}") from exc
        if free_mb < self.options.min_free_disk_mb:
            raise StorageError(
                f"the data dir's disk has {free_mb:.0f} MiB free, under min_free_disk_mb "
                f"({self.options.min_free_disk_mb:g}); free space before stores fail",
                code="store_full",
            )

    def _failed(self, action: str, exc: SQLAlchemyError) -> StorageError:
        error = storage_error(action, exc)
        if is_damage(exc) and self.damaged is None:
            self.damaged = "SQLite reported the database file damaged"
            log.error("the database file is damaged; refusing writes from now on: %s", exc)
        return error


def open_schema(engine: Engine, index_dir: Path) -> Upgrade:
    """Check the database, create or upgrade its tables (``migrate.upgrade``). The result's
    ``rebuilt_ids`` says an upgrade may have left vector indexes holding reused ids, so every
    stored vector must be checked against them.

    Refuses (``StorageError``) a damaged file, and a database without tables while vector
    index files exist: that is a lost or truncated database, and starting empty would throw
    the index files away. Nothing is deleted here.
    """
    try:
        existed = inspect(engine).has_table(entries.name)
        if engine.dialect.name == "sqlite":
            _check_integrity(engine)
        if not existed:
            orphans = (
                sorted(p for e in INDEX_SUFFIXES for p in index_dir.glob(f"*{e}"))
                if index_dir.is_dir()
                else []
            )
            if orphans:
                raise StorageError(
                    f"the database {engine.url.database} holds no cache tables, but "
                    f"{len(orphans)} vector index files exist in {index_dir}: the database "
                    "was lost or truncated. Restore it from a backup, or move the index "
                    "folder aside to start an empty cache; nothing was deleted",
                    code="store_damaged",
                )
        # The schema versions (store/migrations): creates the tables of a new file, brings an
        # older one up to date (hit_floor, an entries table without AUTOINCREMENT rebuilt),
        # and refuses a file a newer release upgraded.
        return upgrade(engine)
    except (SQLAlchemyError, sqlite3.Error) as exc:
        if is_damage(exc):
            raise _damaged(engine, str(getattr(exc, "orig", exc))) from exc
        if isinstance(exc, sqlite3.Error):
            raise StorageError(f"cannot upgrade the store at {engine.url}: {exc}") from exc
        raise storage_error(f"cannot open the store at {engine.url}", exc) from exc


def _check_integrity(engine: Engine) -> None:
    # quick_check reads every page once (O(file size)) but skips index/row cross-checks; it
    # finds overwritten or truncated pages before the server serves from, or writes into,
    # a damaged file.
    with engine.connect() as conn:
        problems = [row[0] for row in conn.execute(text("PRAGMA quick_check(5)"))]
    if problems != ["ok"]:
        raise _damaged(engine, "; ".join(str(p) for p in problems))


def _damaged(engine: Engine, detail: str) -> StorageError:
    return StorageError(
        f"the database {engine.url.database} is damaged ({detail}); semcache will not serve "
        "from it or write into it. Restore it from a backup, or recover what it holds with "
        "`sqlite3 <file> .recover`; the vector index files were left untouched",
        code="store_damaged",
    )
