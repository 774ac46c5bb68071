"""The embedded store: SQLite (or any SQLAlchemy URL) for entries, FAISS for their vectors."""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from ..errors import StorageError
from .base import HIT_FLOOR_MARGIN, Candidate, Entry, NewEntry, Partition, TenantStats
from .schema import entries, metadata
from .vectors import VectorIndexes

__all__ = ["SqlFaissStore"]

log = logging.getLogger(__name__)

# A candidate list shorter than this after context/expiry filtering triggers a wider search,
# so entries of other conversations that crowd the nearest neighbours cannot hide a match.
_MAX_SEARCH_K = 1024


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets lookups read while a store writes. synchronous=FULL fsyncs the WAL at every
    # commit: an entry acknowledged with 201 survives a crash of the process or the machine
    # (issue 2, "Durability").
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    # Several worker threads share the file; wait for a lock instead of failing at once.
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class SqlFaissStore:
    """Entries in SQL, one FAISS index per partition; implements ``CacheStore``."""

    def __init__(self, database_url: str, index_dir: Path, dim: int) -> None:
        self.dim = dim
        self.engine = _make_engine(database_url)
        self.vectors = VectorIndexes(index_dir, dim)
        # SQLite has one writer at a time; serialising writes here keeps SQL and the vector
        # indexes changing in the same order and avoids SQLITE_BUSY on lock upgrades.
        self._write_lock = threading.Lock()
        try:
            metadata.create_all(self.engine)
            _add_new_columns(self.engine)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot open the store at {database_url}: {exc}") from exc
        self.reconcile_report = self._reconcile()

    # -- plumbing ---------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StorageError(f"store read failed: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One committed transaction; callers hold ``_write_lock`` around it."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StorageError(f"store write failed; nothing was written: {exc}") from exc

    def _reconcile(self) -> dict[str, int]:
        ids: dict[str, set[int]] = defaultdict(set)
        with self._read() as conn:
            for row_id, key in conn.execute(select(entries.c.row_id, entries.c.partition_key)):
                ids[key].add(row_id)

        def load(row_ids: list[int]) -> dict[int, np.ndarray]:
            with self._read() as conn:
                rows = conn.execute(
                    select(entries.c.row_id, entries.c.embedding).where(
                        entries.c.row_id.in_(row_ids)
                    )
                )
                return {r: np.frombuffer(blob, dtype=np.float32) for r, blob in rows}

        report = self.vectors.reconcile(ids, load)
        log.info("vector indexes reconciled with SQL: %s", report)
        return report

    # -- CacheStore ---------------------------------------------------------------------------

    def put(self, entry: NewEntry, *, max_entries: int) -> tuple[Entry, int]:
        p = entry.partition
        vector = np.ascontiguousarray(entry.embedding, dtype=np.float32).reshape(self.dim)
        row = {
            "entry_id": entry.entry_id,
            "tenant": p.tenant,
            "namespace": p.namespace,
            "model": p.model,
            "doc_version": p.doc_version,
            "partition_key": p.key,
            "exact_key": entry.exact_key,
            "context_hash": entry.context_hash,
            "query": entry.query,
            "response": json.dumps(entry.response, ensure_ascii=False),
            "metadata": json.dumps(entry.metadata, ensure_ascii=False),
            "embedding": vector.tobytes(),
            "created_at": entry.created_at,
            "expires_at": entry.expires_at,
            "last_used_at": entry.created_at,
            "hit_count": 0,
        }
        with self._write_lock:
            with self._transaction() as conn:
                # Storing an exact key again replaces the answer: same request, newest response.
                replaced = conn.execute(
                    delete(entries)
                    .where(entries.c.tenant == p.tenant, entries.c.exact_key == entry.exact_key)
                    .returning(entries.c.row_id, entries.c.partition_key)
                ).all()
                inserted = conn.execute(entries.insert().values(**row)).inserted_primary_key
                assert inserted is not None
                row_id = inserted[0]
                evicted = self._evict_lru(conn, p.tenant, max_entries)
            # Vectors change after SQL committed and before the next writer, so the indexes
            # never hold a row SQL rejected, and change in the same order as SQL.
            for old_id, key in [*replaced, *evicted]:
                self.vectors.remove(key, [old_id])
            self.vectors.add(p.key, int(row_id), vector)
        stored = Entry(
            entry_id=entry.entry_id,
            row_id=int(row_id),
            partition=p,
            exact_key=entry.exact_key,
            context_hash=entry.context_hash,
            query=entry.query,
            response=entry.response,
            metadata=dict(entry.metadata),
            created_at=entry.created_at,
            expires_at=entry.expires_at,
            last_used_at=entry.created_at,
            hit_count=0,
        )
        return stored, len(evicted)

    def _evict_lru(self, conn: Connection, tenant: str, max_entries: int) -> list[Any]:
        count = conn.execute(
            select(func.count()).select_from(entries).where(entries.c.tenant == tenant)
        ).scalar_one()
        excess = count - max_entries
        if excess <= 0:
            return []
        victims = (
            select(entries.c.row_id)
            .where(entries.c.tenant == tenant)
            .order_by(entries.c.last_used_at, entries.c.row_id)
            .limit(excess)
        )
        return list(
            conn.execute(
                delete(entries)
                .where(entries.c.row_id.in_(victims.scalar_subquery()))
                .returning(entries.c.row_id, entries.c.partition_key)
            ).all()
        )

    def get(self, tenant: str, entry_id: str) -> Entry | None:
        with self._read() as conn:
            row = conn.execute(
                select(entries).where(entries.c.tenant == tenant, entries.c.entry_id == entry_id)
            ).first()
        return None if row is None else _entry(row._mapping)

    def get_exact(self, tenant: str, exact_key: str, now: float) -> Entry | None:
        with self._read() as conn:
            row = conn.execute(
                select(entries).where(
                    entries.c.tenant == tenant,
                    entries.c.exact_key == exact_key,
                    entries.c.expires_at > now,
                )
            ).first()
        return None if row is None else _entry(row._mapping)

    def search(
        self, partition: Partition, vector: np.ndarray, *, context_hash: str, now: float, k: int
    ) -> list[Candidate]:
        key = partition.key
        size = self.vectors.size(key)
        while True:
            hits = self.vectors.search(key, vector, k)
            if not hits:
                return []
            found = self._live_rows(partition, [row_id for row_id, _ in hits], context_hash, now)
            result = [
                Candidate(found[row_id], score)
                for row_id, score in hits
                if row_id in found and _may_hit(found[row_id], score)
            ]
            if result or k >= size or k >= _MAX_SEARCH_K:
                return result
            k *= 4

    def _live_rows(
        self, partition: Partition, row_ids: Sequence[int], context_hash: str, now: float
    ) -> dict[int, Entry]:
        with self._read() as conn:
            rows = conn.execute(
                select(entries).where(
                    entries.c.row_id.in_(row_ids),
                    entries.c.tenant == partition.tenant,
                    entries.c.partition_key == partition.key,
                    entries.c.context_hash == context_hash,
                    entries.c.expires_at > now,
                )
            )
            return {row.row_id: _entry(row._mapping) for row in rows}

    def record_wrong_hit(
        self, tenant: str, entry_id: str, vector: np.ndarray
    ) -> tuple[Entry, float] | None:
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(self.dim)
        where = (entries.c.tenant == tenant, entries.c.entry_id == entry_id)
        with self._write_lock, self._transaction() as conn:
            row = conn.execute(
                select(entries.c.embedding, entries.c.hit_floor).where(*where)
            ).first()
            if row is None:
                return None
            similarity = float(np.dot(np.frombuffer(row.embedding, dtype=np.float32), query))
            if row.hit_floor is None or similarity > row.hit_floor:
                conn.execute(update(entries).where(*where).values(hit_floor=similarity))
            updated = conn.execute(select(entries).where(*where)).one()
        return _entry(updated._mapping), similarity

    def record_hits(self, hits: Mapping[int, tuple[int, float]]) -> None:
        if not hits:
            return
        rows = [{"rid": r, "n": n, "at": at} for r, (n, at) in hits.items()]
        with self._write_lock, self._transaction() as conn:
            conn.execute(
                update(entries)
                .where(entries.c.row_id == bindparam("rid"))
                .values(
                    hit_count=entries.c.hit_count + bindparam("n"),
                    # CASE, not max(a, b): two-argument max is SQLite-only.
                    last_used_at=case(
                        (entries.c.last_used_at > bindparam("at"), entries.c.last_used_at),
                        else_=bindparam("at"),
                    ),
                ),
                rows,
            )

    def delete(self, tenant: str, entry_id: str) -> bool:
        return self._delete_where([entries.c.tenant == tenant, entries.c.entry_id == entry_id]) > 0

    def invalidate(
        self,
        tenant: str,
        *,
        namespace: str | None = None,
        model: str | None = None,
        doc_version: str | None = None,
    ) -> int:
        conditions = [entries.c.tenant == tenant]
        for column, value in (
            (entries.c.namespace, namespace),
            (entries.c.model, model),
            (entries.c.doc_version, doc_version),
        ):
            if value is not None:
                conditions.append(column == value)
        return self._delete_where(conditions)

    def sweep_expired(self, now: float) -> int:
        return self._delete_where([entries.c.expires_at <= now])

    def _delete_where(self, conditions: list[Any]) -> int:
        with self._write_lock:
            with self._transaction() as conn:
                gone = conn.execute(
                    delete(entries)
                    .where(*conditions)
                    .returning(entries.c.row_id, entries.c.partition_key)
                ).all()
            by_partition: dict[str, list[int]] = defaultdict(list)
            for row_id, key in gone:
                by_partition[key].append(row_id)
            for key, ids in by_partition.items():
                self.vectors.remove(key, ids)
        return len(gone)

    def tenant_stats(self, tenant: str) -> TenantStats:
        with self._read() as conn:
            count, partitions, hits = conn.execute(
                select(
                    func.count(),
                    func.count(entries.c.partition_key.distinct()),
                    func.coalesce(func.sum(entries.c.hit_count), 0),
                ).where(entries.c.tenant == tenant)
            ).one()
        return TenantStats(entries=int(count), partitions=int(partitions), hits=int(hits))

    def count_entries(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(entries)).scalar_one())

    def check(self) -> None:
        with self._read() as conn:
            conn.execute(select(1)).scalar_one()

    def flush(self) -> None:
        self.vectors.save()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.engine.dispose()


def _may_hit(entry: Entry, similarity: float) -> bool:
    # An entry reported as a wrong hit answers only queries closer than the reported one; the
    # search widens past floored entries as it does past other conversations' (issue 5 review).
    return entry.hit_floor is None or similarity > entry.hit_floor + HIT_FLOOR_MARGIN


def _add_new_columns(engine: Engine) -> None:
    """Add the nullable columns a newer schema has to tables an older release created
    (``entries.hit_floor``); create_all makes missing tables but never alters one."""
    inspector = inspect(engine)
    for table in metadata.sorted_tables:
        if not inspector.has_table(table.name):
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present and column.nullable:
                kind = column.type.compile(dialect=engine.dialect)
                try:
                    with engine.begin() as conn:
                        conn.execute(
                            text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}')
                        )
                except SQLAlchemyError:
                    # Another process opening the same store may have added it first.
                    columns = inspect(engine).get_columns(table.name)
                    if column.name not in {c["name"] for c in columns}:
                        raise
                log.info("added column %s.%s to an older store", table.name, column.name)


def _make_engine(url: str) -> Engine:
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        return create_engine(url, pool_pre_ping=True)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise StorageError(f"cannot use database URL {url!r}: {exc}") from exc


def _entry(row: Any) -> Entry:
    return Entry(
        entry_id=row["entry_id"],
        row_id=int(row["row_id"]),
        partition=Partition(row["tenant"], row["namespace"], row["model"], row["doc_version"]),
        exact_key=row["exact_key"],
        context_hash=row["context_hash"],
        query=row["query"],
        response=json.loads(row["response"]),
        metadata=json.loads(row["metadata"]),
        created_at=float(row["created_at"]),
        expires_at=float(row["expires_at"]),
        last_used_at=float(row["last_used_at"]),
        hit_count=int(row["hit_count"]),
        hit_floor=None if row["hit_floor"] is None else float(row["hit_floor"]),
    )
