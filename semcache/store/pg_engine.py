"""How the PostgreSQL store connects: the engine, its pool and each connection's settings.

SQLAlchemy's pool over psycopg 3, ``pool_size`` per process and no overflow. psycopg prepares
a statement server-side on its ``_PREPARE_THRESHOLD``-th execution on a connection, so the hot
path's few statements (exact probe, search, hit flush, put) run prepared and one-off statements
(stats, sweeps, migrations) do not fill the cache. Each new connection gets pgvector's binary
vectors and the session settings the search relies on (iterative HNSW scans, ef_search, the
lock timeout).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import psycopg
from pgvector.psycopg import register_vector
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ..errors import StorageError

__all__ = ["PostgresOptions", "is_postgres_url", "make_pg_engine"]

# A statement is prepared on the server at its second execution on a connection: the hot path
# repeats a handful of statements thousands of times, one-off ones run unprepared.
_PREPARE_THRESHOLD = 2


@dataclass(frozen=True)
class PostgresOptions:
    """How the PostgreSQL store connects, waits and searches."""

    # A write waits this long for a row lock (lock_timeout) and any call this long for a free
    # pooled connection, then answers 503 store_busy.
    write_timeout_s: float = 5.0
    # Connections this process keeps to PostgreSQL (no overflow): max_connections of the
    # server must exceed replicas x pool_size, plus what administration needs.
    pool_size: int = 10
    # hnsw.ef_search: candidates the HNSW scan keeps; higher finds the true nearest neighbour
    # more often and costs more (benchmarks/pgvector_search.py).
    ef_search: int = 100
    # libpq connect_timeout, seconds.
    connect_timeout_s: int = 5


def is_postgres_url(url: str) -> bool:
    return url.startswith("postgresql")


def make_pg_engine(url: str, options: PostgresOptions) -> Engine:
    """A pooled psycopg 3 engine whose connections search with iterative HNSW scans."""
    try:
        parsed = make_url(url)
        if parsed.drivername == "postgresql":
            # SQLAlchemy's default PostgreSQL driver is psycopg2; semcache ships psycopg 3.
            parsed = parsed.set(drivername="postgresql+psycopg")
        if parsed.drivername != "postgresql+psycopg":
            raise ArgumentError(f"driver {parsed.drivername!r}: use postgresql+psycopg://")
        engine = create_engine(
            parsed,
            pool_size=options.pool_size,
            max_overflow=0,
            pool_timeout=options.write_timeout_s,
            # No ping per checkout (a round trip on every call): a connection found dead
            # fails its call with 503 and SQLAlchemy then replaces every pooled connection
            # opened before it, so the pool is good again after a server restart.
            pool_pre_ping=False,
            pool_use_lifo=True,
            connect_args={
                "prepare_threshold": _PREPARE_THRESHOLD,
                "connect_timeout": options.connect_timeout_s,
                "application_name": "semcache",
            },
        )
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise StorageError(f"cannot use database URL {_safe(url)}: {exc}") from exc
    lock_ms = int(options.write_timeout_s * 1000)

    def session_settings(dbapi_connection: Any, _record: Any) -> None:
        # numpy arrays as binary vector parameters on this connection. No vector type yet on
        # the connection that runs the first migration; the store opens fresh ones after it.
        with contextlib.suppress(psycopg.ProgrammingError):
            register_vector(dbapi_connection)
        with dbapi_connection.cursor() as cursor:
            # pgvector 0.8: an HNSW scan whose rows the filters drop keeps scanning (up to
            # hnsw.max_scan_tuples) until LIMIT rows pass; relaxed order, re-sorted in search.
            cursor.execute("SET hnsw.iterative_scan = relaxed_order")
            cursor.execute(f"SET hnsw.ef_search = {int(options.ef_search)}")
            cursor.execute(f"SET lock_timeout = {lock_ms}")
        dbapi_connection.commit()

    event.listen(engine, "connect", session_settings)
    return engine


def _safe(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable)"
