"""psycopg and SQLAlchemy errors from PostgreSQL as ``StorageError``, in a few words.

The primary message of the server's error, never the statement; a cause the client can wait
out (busy, unreachable) carries ``Retry-After``. The full error goes to the log.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import TimeoutError as PoolTimeout

from ..errors import StorageError

__all__ = ["pg_storage_error"]

log = logging.getLogger(__name__)

# SQLSTATEs that mean "retry shortly": serialization failure, deadlock, lock timeout, query
# cancelled (statement_timeout), too many connections, server starting or shutting down.
_BUSY = {"40001", "40P01", "55P03", "57014", "53300"}
_DOWN_CLASSES = ("08", "57P")
_FULL = {"53100"}


def pg_storage_error(action: str, exc: BaseException) -> StorageError:
    """A ``StorageError`` naming the cause in a few words (the full error goes to the log)."""
    log.warning("%s: %s", action, exc)
    if isinstance(exc, PoolTimeout):
        return StorageError(
            f"{action}: every database connection of this process is in use; retry shortly",
            code="store_busy",
            headers={"Retry-After": "1"},
        )
    orig = getattr(exc, "orig", exc)
    sqlstate = getattr(orig, "sqlstate", None) or ""
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if sqlstate in _BUSY:
        return StorageError(
            f"{action}: the database is busy ({primary or 'lock timeout'}); retry shortly",
            code="store_busy",
            headers={"Retry-After": "1"},
        )
    if sqlstate in _FULL:
        return StorageError(f"{action}: the database server's disk is full", code="store_full")
    disconnected = bool(getattr(exc, "connection_invalidated", False))
    if (
        disconnected
        or sqlstate.startswith(_DOWN_CLASSES)
        or (not sqlstate and type(orig).__name__ == "OperationalError")
    ):
        # A connection error carries no statement: its first line says what libpq met.
        detail = primary or str(orig).split("\n", 1)[0][:300]
        return StorageError(
            f"{action}: the database is unreachable ({detail}); retry shortly",
            code="store_unavailable",
            headers={"Retry-After": "1"},
        )
    # The server's primary message only: str(orig) would carry the statement (LINE 1: ...).
    reason = primary or type(orig).__name__
    return StorageError(f"{action}: {reason}")
