"""Table shapes as the early revisions create them. Frozen: never edit these to change the
schema; a new revision in ``versions/`` changes it with ``op`` calls, so that every database,
whichever revision it starts from, ends in the same shape."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeEngine

__all__ = ["HNSW_INDEX", "entries_table", "requests_table"]

# The pgvector HNSW index over the PostgreSQL entries' embeddings (inner product: the vectors
# are L2-normalised, so it orders by cosine similarity).
HNSW_INDEX = "ix_entries_embedding_hnsw"


def _row_id(dialect: str) -> Column[int]:
    if dialect == "sqlite":
        # INTEGER PRIMARY KEY AUTOINCREMENT (sqlite_autoincrement below): the rowid itself,
        # never handed out twice.
        return Column("row_id", Integer, primary_key=True, autoincrement=True)
    return Column("row_id", BigInteger, Identity(always=False), primary_key=True)


def _embedding(dialect: str, dim: int) -> Column[bytes]:
    kind: TypeEngine[bytes]
    if dialect == "postgresql":
        from pgvector.sqlalchemy import Vector

        kind = Vector(dim)
    else:
        kind = LargeBinary()
    return Column("embedding", kind, nullable=False)


def entries_table(metadata: MetaData, dialect: str, dim: int, *, hit_floor: bool) -> Table:
    """``entries`` as revision r0001 creates it (``hit_floor`` as of r0002)."""
    columns: list[Column[Any]] = [
        _row_id(dialect),
        Column("entry_id", String(32), nullable=False, unique=True),
        Column("tenant", String(200), nullable=False),
        Column("namespace", String(200), nullable=False),
        Column("model", String(200), nullable=False),
        Column("doc_version", String(200), nullable=False),
        Column("partition_key", String(16), nullable=False),
        Column("exact_key", String(32), nullable=False),
        Column("context_hash", String(32), nullable=False),
        Column("query", Text, nullable=False),
        Column("response", Text, nullable=False),
        Column("metadata", Text, nullable=False),
        _embedding(dialect, dim),
        Column("created_at", Float, nullable=False),
        Column("expires_at", Float, nullable=False),
        Column("last_used_at", Float, nullable=False),
        Column("hit_count", Integer, nullable=False),
    ]
    if hit_floor:
        columns.append(Column("hit_floor", Float, nullable=True))
    return Table(
        "entries",
        metadata,
        *columns,
        Index("ix_entries_exact", "tenant", "exact_key", unique=True),
        Index("ix_entries_tenant_used", "tenant", "last_used_at"),
        Index("ix_entries_partition", "partition_key"),
        Index("ix_entries_expires", "expires_at"),
        sqlite_autoincrement=True,
    )


def requests_table(metadata: MetaData, dialect: str) -> Table:
    """``requests`` (attribution rows) as revision r0001 creates it."""
    key = (
        Column("id", Integer, primary_key=True, autoincrement=True)
        if dialect == "sqlite"
        else Column("id", BigInteger, Identity(always=False), primary_key=True)
    )
    return Table(
        "requests",
        metadata,
        key,
        Column("ts", Float, nullable=False),
        Column("day", String(10), nullable=False),
        Column("tenant", String(200), nullable=False),
        Column("user", String(200), nullable=False),
        Column("feature", String(200), nullable=False),
        Column("model", String(200), nullable=False),
        Column("status", String(20), nullable=False),
        Column("prompt_tokens", Integer, nullable=False),
        Column("completion_tokens", Integer, nullable=False),
        Column("cached_tokens", Integer, nullable=False),
        Column("cost_usd", Float, nullable=True),
        Column("priced", Boolean, nullable=False),
        Column("saved_usd", Float, nullable=False),
        Column("prompt_cache_saved_usd", Float, nullable=False),
        Column("latency_ms", Float, nullable=False),
        Index("ix_requests_tenant_ts", "tenant", "ts"),
    )
