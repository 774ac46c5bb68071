"""SQL tables (SQLAlchemy Core). SQL is the source of truth; vector indexes derive from it.

The shapes the stores query. The migrations (``migrations/``) make them; tests/test_migrations.py
checks that the two agree on both backends.
"""

from __future__ import annotations

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = ["ENTRY_COLUMNS", "entries", "flights", "metadata", "requests"]

metadata = MetaData()

# 64-bit ids on PostgreSQL (an identity column); SQLite's INTEGER PRIMARY KEY is its rowid.
_ROW_ID = BigInteger().with_variant(Integer(), "sqlite")

entries = Table(
    "entries",
    metadata,
    # The integer row id doubles as the FAISS id; the public id is a random hex string so ids
    # reveal nothing about other tenants' traffic.
    Column("row_id", _ROW_ID, primary_key=True, autoincrement=True),
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
    # float32 bytes in SQLite (FAISS holds the index); a pgvector vector(dim) on PostgreSQL,
    # under an HNSW index (inner product).
    Column("embedding", LargeBinary().with_variant(Vector(), "postgresql"), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("last_used_at", Float, nullable=False),
    Column("hit_count", Integer, nullable=False, default=0),
    # The similarity a query must exceed to hit this entry semantically: the highest similarity
    # of a query reported as a wrong hit for it (POST /v1/cache/entries/{id}/wrong-hits). NULL
    # until a report. Added after the first release: revision 0002 adds it to older files.
    Column("hit_floor", Float, nullable=True),
    Index("ix_entries_exact", "tenant", "exact_key", unique=True),
    Index("ix_entries_tenant_used", "tenant", "last_used_at"),
    Index("ix_entries_partition", "partition_key"),
    Index("ix_entries_expires", "expires_at"),
    # AUTOINCREMENT: a deleted top row id is never handed out again, so a vector index saved
    # before a delete can never hold an old entry's vector under a new entry's id. Files made
    # before this get their table rebuilt on open (revision 0003).
    sqlite_autoincrement=True,
)

# One row per proxied request (attribution per tenant, user and feature): who asked, what it
# cost, what it saved.
requests = Table(
    "requests",
    metadata,
    Column("id", _ROW_ID, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("day", String(10), nullable=False),
    Column("tenant", String(200), nullable=False),
    Column("user", String(200), nullable=False, default=""),
    Column("feature", String(200), nullable=False, default=""),
    Column("model", String(200), nullable=False),
    Column("status", String(20), nullable=False),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("cached_tokens", Integer, nullable=False, default=0),
    # NULL cost means the model is not in the pricing table: unpriced, never $0.
    Column("cost_usd", Float, nullable=True),
    Column("priced", Boolean, nullable=False, default=True),
    Column("saved_usd", Float, nullable=False, default=0.0),
    Column("prompt_cache_saved_usd", Float, nullable=False, default=0.0),
    Column("latency_ms", Float, nullable=False, default=0.0),
    Index("ix_requests_tenant_ts", "tenant", "ts"),
)

# Cross-replica single-flight claims (store/flights.py; PostgreSQL only): the replica making
# the upstream call for an exact key, until expires_at (the database's clock, epoch seconds).
flights = Table(
    "flights",
    metadata,
    Column("exact_key", String(32), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("expires_at", Float, nullable=False),
)

# Columns read back for an entry: every one but the embedding, which no Entry carries and
# which is the widest by far (384 floats).
ENTRY_COLUMNS = [column for column in entries.c if column.name != "embedding"]
