"""The shared store: entries and their vectors in PostgreSQL with pgvector; implements
``CacheStore``.

Chosen when ``database_url`` starts with ``postgresql``. Every replica on one database sees
every write at once: a vector is a column of its entry's row under an HNSW index (inner
product of L2-normalised vectors, so similarity is cosine in [-1, 1], docs/ARCHITECTURE.md
"Similarity scale"), so there is no index to sync, save or reconcile and nothing on local disk.

Search filters (partition, context hash, expiry, hit floor) sit in the same query as the
index scan, and ``hnsw.iterative_scan = relaxed_order`` (pgvector 0.8) lets the scan go on
past rows the filters drop until ``k`` rows pass, which is the widening ``SqlFaissStore`` does
by hand; the rows are re-sorted by similarity here. A partition small enough for its btree to
be cheaper is searched exactly by the planner's choice. benchmarks/pgvector_search.py measures
recall@1 against exact search.

Connections come from ``pg_engine`` (a psycopg 3 pool, statements prepared on the server).
Reads run in autocommit (one round trip, no BEGIN/ROLLBACK); writes in one transaction each.
psycopg and SQLAlchemy errors become ``StorageError`` here, named in a few words (the primary
message of the server's error, never the statement).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from sqlalchemy import (
    Connection,
    bindparam,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from ..errors import StorageError
from .attribution import AttributionStore
from .base import (
    Candidate,
    Entry,
    NewEntry,
    Partition,
    entry_from_row,
    filtered_reason,
    last_per_key,
)
from .counters import SharedBuckets, SharedSpendLedger
from .flights import FlightClaims
from .migrate import upgrade
from .migrations.frozen import HNSW_INDEX
from .pg_engine import PostgresOptions, is_postgres_url, make_pg_engine
from .pg_errors import pg_storage_error
from .pg_statements import (
    INSERT,
    LOCK_KEYS,
    NEAREST,
    SEARCH,
    TENANT_COUNT,
    WRONG_HIT,
    lock_key,
)
from .schema import entries
from .sql_entries import SqlEntries

__all__ = ["PostgresOptions", "PostgresStore", "is_postgres_url", "pg_storage_error"]

log = logging.getLogger(__name__)

# Expired rows deleted per sweep transaction, so a sweep never holds many row locks for long.
_SWEEP_BATCH = 5000
# pg_try_advisory_xact_lock key of the expiry sweep: one replica sweeps at a time, the others
# skip their round ("sweeping" in ASCII).
_SWEEP_LOCK_KEY = 0x7377656570696E67


class PostgresStore(SqlEntries):
    """Entries and vectors in one PostgreSQL database, shared by every replica."""

    def __init__(self, database_url: str, dim: int, options: PostgresOptions | None = None) -> None:
        self.dim = dim
        self.options = options or PostgresOptions()
        self.engine = make_pg_engine(database_url, self.options)
        # Reads share the pool but run in autocommit: no BEGIN and ROLLBACK around a SELECT.
        self._reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        where = self.engine.url.render_as_string(hide_password=True)
        try:
            # Creates or upgrades the tables under an advisory lock (two replicas starting
            # together migrate once); refuses a schema newer than this code.
            self.schema = upgrade(self.engine, dim=dim)
            # Connections opened before the vector type existed lack its adapter.
            self.engine.dispose()
            held = self._stored_dim()
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise pg_storage_error(f"cannot open the store at {where}", exc) from exc
        except BaseException:
            self.engine.dispose()
            raise
        if held != dim:
            self.engine.dispose()
            raise StorageError(
                f"the database at {where} holds {held}-dimensional vectors but the encoder "
                f"makes {dim}-dimensional ones: use another database for this model"
            )

    def _stored_dim(self) -> int:
        with self.engine.connect() as conn:
            # A vector column's type modifier is its dimension.
            return int(
                conn.execute(
                    text(
                        "SELECT atttypmod FROM pg_attribute "
                        "WHERE attrelid = 'entries'::regclass AND attname = 'embedding'"
                    )
                ).scalar_one()
            )

    # -- plumbing ---------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self._reader.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise pg_storage_error("store read failed", exc) from exc

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One committed transaction."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise pg_storage_error("store write failed; nothing was written", exc) from exc

    def _vector(self, vector: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(vector, dtype=np.float32).reshape(self.dim)

    # -- CacheStore ---------------------------------------------------------------------------

    def put(self, entry: NewEntry, *, max_entries: int) -> tuple[Entry, int]:
        stored, evicted = self.put_many([entry], max_entries=max_entries)
        return stored[0], evicted

    def put_many(self, batch: Sequence[NewEntry], *, max_entries: int) -> tuple[list[Entry], int]:
        written, slots = last_per_key(batch)
        if not written:
            return [], 0
        rows = [self._row(e) for e in written]
        keys_of: dict[str, list[str]] = defaultdict(list)
        for e in written:
            keys_of[e.partition.tenant].append(e.exact_key)
        # Two replicas storing the same request at once take turns here, so the second
        # replaces the first's answer instead of failing on the unique exact key; locked in
        # key order, so two batches sharing keys never deadlock.
        locks = sorted({lock_key("put", e.partition.tenant, e.exact_key) for e in written})
        with self._transaction() as conn:
            conn.execute(LOCK_KEYS, {"keys": locks})
            # Storing an exact key again replaces the answer: same request, newest response.
            for tenant, keys in keys_of.items():
                conn.execute(
                    delete(entries).where(entries.c.tenant == tenant, entries.c.exact_key.in_(keys))
                )
            # One multi-row INSERT (SQLAlchemy's insertmanyvalues), ids in batch order.
            row_ids = [int(r) for r in conn.execute(INSERT, rows).scalars().all()]
            evicted = sum(self._evict_lru(conn, tenant, max_entries) for tenant in keys_of)
        stored = [e.stored(row_id) for e, row_id in zip(written, row_ids, strict=True)]
        return [stored[slot] for slot in slots], evicted

    def _row(self, entry: NewEntry) -> dict[str, Any]:
        return {**entry.columns(), "vector": self._vector(entry.embedding)}

    def _evict_lru(self, conn: Connection, tenant: str, max_entries: int) -> int:
        # Kept by triggers (revision 0005), including this transaction's own insert; the
        # insert locked the tenant's row, so concurrent stores of one tenant count in turn.
        count = conn.execute(TENANT_COUNT, {"tenant": tenant}).scalar() or 0
        excess = count - max_entries
        if excess <= 0:
            return 0
        # SKIP LOCKED: victims another transaction holds (being replaced) are passed over,
        # so evictions never wait on stores of the same tenant.
        victims = (
            select(entries.c.row_id)
            .where(entries.c.tenant == tenant)
            .order_by(entries.c.last_used_at, entries.c.row_id)
            .limit(excess)
            .with_for_update(skip_locked=True)
        )
        result = conn.execute(
            delete(entries).where(entries.c.row_id.in_(victims.scalar_subquery()))
        )
        return int(result.rowcount)

    def search(
        self,
        partition: Partition,
        vector: np.ndarray,
        *,
        context_hash: str,
        now: float,
        k: int,
        min_similarity: float = -1.0,
        limit: int | None = None,
    ) -> list[Candidate]:
        # The filters run inside pgvector's iterative scan, so there is no widening for
        # min_similarity to stop. ``limit`` only trims the answer: the scan's order is relaxed,
        # so the k rows are read and sorted before the first ``limit`` are kept.
        params = {
            "q": self._vector(vector),
            "partition_key": partition.key,
            "tenant": partition.tenant,
            "context_hash": context_hash,
            "now": now,
            "k": k,
        }
        with self._read() as conn:
            rows = conn.execute(SEARCH, params).all()
        found = [Candidate(entry_from_row(row._mapping), float(row.similarity)) for row in rows]
        # relaxed_order: the iterative scan may return rows slightly out of order.
        found.sort(key=lambda c: c.similarity, reverse=True)
        return found if limit is None else found[:limit]

    def explain_miss(
        self,
        partition: Partition,
        vector: np.ndarray,
        *,
        context_hash: str,
        now: float,
        threshold: float,
        k: int,
    ) -> str | None:
        params = {
            "q": self._vector(vector),
            "partition_key": partition.key,
            "tenant": partition.tenant,
            "k": k,
        }
        with self._read() as conn:
            rows = conn.execute(NEAREST, params).all()
        nearest = [Candidate(entry_from_row(row._mapping), float(row.similarity)) for row in rows]
        return filtered_reason(nearest, context_hash=context_hash, now=now, threshold=threshold)

    def record_wrong_hit(
        self, tenant: str, entry_id: str, vector: np.ndarray
    ) -> tuple[Entry, float] | None:
        params = {"q": self._vector(vector), "b_tenant": tenant, "b_id": entry_id}
        with self._transaction() as conn:
            # One statement, so two reports from two replicas at once both count.
            row = conn.execute(WRONG_HIT, params).first()
        if row is None:
            return None
        return entry_from_row(row._mapping), float(row.similarity)

    def record_hits(self, hits: Mapping[int, tuple[int, float]]) -> None:
        if not hits:
            return
        rows = [{"rid": r, "n": n, "at": at} for r, (n, at) in sorted(hits.items())]
        with self._transaction() as conn:
            # Sorted by row id, so two replicas flushing overlapping hits lock rows in the
            # same order and never deadlock.
            conn.execute(
                update(entries)
                .where(entries.c.row_id == bindparam("rid"))
                .values(
                    hit_count=entries.c.hit_count + bindparam("n"),
                    last_used_at=func.greatest(entries.c.last_used_at, bindparam("at")),
                ),
                rows,
            )

    def sweep_expired(self, now: float) -> int:
        removed = 0
        while True:
            with self._transaction() as conn:
                # Every replica's sweeper runs on the same rows: one sweeps, the others skip
                # this round instead of queueing behind its row locks.
                if not conn.execute(
                    select(func.pg_try_advisory_xact_lock(_SWEEP_LOCK_KEY))
                ).scalar_one():
                    return removed
                batch = (
                    select(entries.c.row_id)
                    .where(entries.c.expires_at <= now)
                    .limit(_SWEEP_BATCH)
                    .with_for_update(skip_locked=True)
                )
                gone = int(
                    conn.execute(
                        delete(entries).where(entries.c.row_id.in_(batch.scalar_subquery()))
                    ).rowcount
                )
            removed += gone
            if gone < _SWEEP_BATCH:
                return removed

    def _delete_where(self, conditions: list[Any]) -> int:
        with self._transaction() as conn:
            return int(conn.execute(delete(entries).where(*conditions)).rowcount)

    def index_size_bytes(self) -> int:
        """The HNSW index's size on the server (the vectors' own column is in the table)."""
        with self._read() as conn:
            return int(
                conn.execute(
                    select(func.pg_relation_size(func.to_regclass(HNSW_INDEX)))
                ).scalar_one()
                or 0
            )

    def check(self) -> None:
        with self._read() as conn:
            conn.execute(select(1)).scalar_one()

    def attribution(self) -> AttributionStore:
        return AttributionStore(self.engine)

    def flight_claims(self) -> FlightClaims:
        """Cross-replica single-flight: which replica calls upstream for an exact key."""
        return FlightClaims(self.engine)

    def shared_buckets(self) -> SharedBuckets:
        """Rate-limit buckets every replica on this database takes from."""
        return SharedBuckets(self.engine)

    def spend_ledger(self) -> SharedSpendLedger:
        """Spend totals every replica's budget checks read."""
        return SharedSpendLedger(self.engine)

    def flush(self) -> None:
        """Nothing to persist: the vectors are rows, committed with their entries."""

    def catch_up(self) -> int:
        """Nothing to catch up on: every replica searches the same rows."""
        return 0

    def close(self) -> None:
        self.engine.dispose()
