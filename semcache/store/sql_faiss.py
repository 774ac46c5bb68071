"""The embedded store: SQLite (or any SQLAlchemy URL) for entries, FAISS for their vectors.

Several processes may share one data dir: SQL serialises their writes, the first to open it
owns the index files (``index_dir_lock``), and each indexes the rows the others commit
(``catch_up``, ``sql_sync``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, bindparam, case, delete, func, select, update

from .attribution import AttributionStore
from .base import (
    HIT_FLOOR_MARGIN,
    Candidate,
    Entry,
    NewEntry,
    Partition,
    entry_from_row,
    filtered_reason,
    last_per_key,
)
from .index_dir_lock import IndexDirLock
from .schema import ENTRY_COLUMNS, entries
from .sql_entries import SqlEntries
from .sql_sync import ForeignDeletes, catch_up_round, reconcile
from .sqlite import SqliteAccess, StoreOptions, open_schema
from .vectors import IndexOptions, VectorIndexes

__all__ = ["SqlFaissStore"]

log = logging.getLogger(__name__)

# A candidate list shorter than this after context/expiry filtering triggers a wider search,
# so entries of other conversations that crowd the nearest neighbours cannot hide a match.
_MAX_SEARCH_K = 1024
_INSERT = entries.insert().returning(entries.c.row_id, sort_by_parameter_order=True)


class SqlFaissStore(SqlEntries):
    """Entries in SQL, one FAISS index per partition; implements ``CacheStore``."""

    def __init__(
        self,
        database_url: str,
        index_dir: Path,
        dim: int,
        options: StoreOptions | None = None,
        index_options: IndexOptions | None = None,
    ) -> None:
        self.dim = dim
        self.options = options or StoreOptions()
        self.index_dir = index_dir
        self.sql = SqliteAccess(database_url, self.options)
        self.engine = self.sql.engine
        self._closed = False
        # None: another process owns the index files (held until close).
        self._owner_lock = IndexDirLock.try_acquire(index_dir)
        if self._owner_lock is None:
            log.warning(
                "the vector index files in %s belong to %s, which opened this data dir first: "
                "this process keeps its indexes in memory (a running server indexes what this "
                "one stores within a second; otherwise the next start does)",
                index_dir,
                IndexDirLock.holder(index_dir),
            )
        self.vectors = VectorIndexes(
            index_dir, dim, index_options, writable=self._owner_lock is not None
        )
        try:
            self.schema = open_schema(self.engine, index_dir)
            with self._read() as conn:
                self.reconcile_report, self._foreign, self._deletes = reconcile(
                    conn, self.vectors, self.schema.rebuilt_ids
                )
        except BaseException:
            self.vectors.give_up_files()
            self.vectors.close()  # stops merge threads reconcile started; writes nothing
            self._release()
            raise

    @property
    def owns_index_files(self) -> bool:
        """Whether this process writes the index files (the first to open the data dir)."""
        return self._owner_lock is not None

    # -- plumbing ---------------------------------------------------------------------------

    def _read(self) -> AbstractContextManager[Connection]:
        return self.sql.read()

    # -- CacheStore ---------------------------------------------------------------------------

    def put(self, entry: NewEntry, *, max_entries: int) -> tuple[Entry, int]:
        stored, evicted = self.put_many([entry], max_entries=max_entries)
        return stored[0], evicted

    def put_many(self, batch: Sequence[NewEntry], *, max_entries: int) -> tuple[list[Entry], int]:
        written, slots = last_per_key(batch)
        if not written:
            return [], 0
        vectors = np.vstack([self._vector(e.embedding) for e in written])
        rows = [_row(e, vector.tobytes()) for e, vector in zip(written, vectors, strict=True)]
        keys_of: dict[str, list[str]] = defaultdict(list)
        for e in written:
            keys_of[e.partition.tenant].append(e.exact_key)
        with self.sql.writing():
            with self.sql.transaction() as conn:
                # Storing an exact key again replaces the answer: same request, newest response.
                replaced = [
                    gone
                    for tenant, keys in keys_of.items()
                    for gone in conn.execute(
                        delete(entries)
                        .where(entries.c.tenant == tenant, entries.c.exact_key.in_(keys))
                        .returning(entries.c.row_id, entries.c.partition_key)
                    ).all()
                ]
                # One multi-row INSERT (SQLAlchemy's insertmanyvalues), ids in batch order.
                row_ids = [int(r) for r in conn.execute(_INSERT, rows).scalars().all()]
                evicted = [
                    gone
                    for tenant in keys_of
                    for gone in self._evict_lru(conn, tenant, max_entries)
                ]
                deletes_mark = self._own_deletes(conn, len(replaced) + len(evicted))
            self._deletes_advance(deletes_mark)
            # Vectors change after SQL committed and before the next writer, so the indexes
            # never hold a row SQL rejected, and change in the same order as SQL: added first,
            # so that a row of this batch evicted at once is removed again.
            by_partition: dict[str, list[int]] = defaultdict(list)
            for n, e in enumerate(written):
                by_partition[e.partition.key].append(n)
            # Committed: even if an add below fails, a catch-up must not add these again.
            self._foreign.wrote(row_ids)
            for key, positions in by_partition.items():
                self.vectors.add(key, [row_ids[n] for n in positions], vectors[positions])
            for old_id, key in [*replaced, *evicted]:
                self.vectors.remove(key, [old_id])
        stored = [e.stored(row_id) for e, row_id in zip(written, row_ids, strict=True)]
        return [stored[slot] for slot in slots], len(evicted)

    def _own_deletes(self, conn: Connection, deleted: int) -> int | None:
        # This process drops its deleted rows' vectors itself: when the tombstones above the
        # mark are all its own, the mark passes them after the commit, and the next catch-up
        # has nothing to read and takes no lock.
        return None if self._deletes is None else self._deletes.mark_after_own(conn, deleted)

    def _deletes_advance(self, mark: int | None) -> None:
        if self._deletes is not None:
            self._deletes.advance(mark)

    def _vector(self, vector: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(vector, dtype=np.float32).reshape(self.dim)

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
        key = partition.key
        size = self.vectors.size(key)
        while True:
            hits = self.vectors.search(key, vector, k)
            if not hits:
                return []
            result = self._live_candidates(partition, hits, context_hash, now, limit)
            # Widened (k x 4) past other contexts' entries, expired ones and hit floors, up to
            # _MAX_SEARCH_K, but not once the k-th nearest is below the caller's floor: what
            # lies further could not hit. At a million entries that was most of a miss's cost
            # (four searches and a fetch of up to 1,024 rows).
            if result or k >= size or k >= _MAX_SEARCH_K or hits[-1][1] < min_similarity:
                return result
            k *= 4

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
        hits = self.vectors.search(partition.key, vector, k)
        if not hits or max(score for _, score in hits) < threshold:
            return None
        with self._read() as conn:
            rows = conn.execute(
                select(entries).where(
                    entries.c.row_id.in_([row_id for row_id, _ in hits]),
                    entries.c.tenant == partition.tenant,
                    entries.c.partition_key == partition.key,
                )
            )
            found = {row.row_id: entry_from_row(row._mapping) for row in rows}
        nearest = [Candidate(found[r], score) for r, score in hits if r in found]
        return filtered_reason(nearest, context_hash=context_hash, now=now, threshold=threshold)

    def _live_candidates(
        self,
        partition: Partition,
        hits: list[tuple[int, float]],
        context_hash: str,
        now: float,
        limit: int | None,
    ) -> list[Candidate]:
        """The live candidates among ``hits`` (most similar first), or their first ``limit``.

        With a limit, the rows of the ``limit`` nearest are read first and the others only
        when some of those were filtered out (another context, expired, a hit floor):
        reading and decoding the 16 nearest rows was most of a search's cost, and the hit
        decision reads at most its few most similar candidates
        (benchmarks/results/hot_path_profile.md)."""
        chunks = [hits] if limit is None else [hits[:limit], hits[limit:]]
        result: list[Candidate] = []
        for chunk in chunks:
            if not chunk:
                continue
            found = self._live_rows(partition, [row_id for row_id, _ in chunk], context_hash, now)
            result += [
                Candidate(found[row_id], score)
                for row_id, score in chunk
                if row_id in found and _may_hit(found[row_id], score)
            ]
            if limit is not None and len(result) >= limit:
                break
        return result if limit is None else result[:limit]

    def _live_rows(
        self, partition: Partition, row_ids: Sequence[int], context_hash: str, now: float
    ) -> dict[int, Entry]:
        with self._read() as conn:
            rows = conn.execute(
                _LIVE,
                {
                    "row_ids": list(row_ids),
                    "tenant": partition.tenant,
                    "partition_key": partition.key,
                    "context_hash": context_hash,
                    "now": now,
                },
            )
            return {row.row_id: entry_from_row(row._mapping) for row in rows}

    def record_wrong_hit(
        self, tenant: str, entry_id: str, vector: np.ndarray
    ) -> tuple[Entry, float] | None:
        query = self._vector(vector)
        where = (entries.c.tenant == tenant, entries.c.entry_id == entry_id)
        with self.sql.writing(), self.sql.transaction() as conn:
            row = conn.execute(
                select(entries.c.embedding, entries.c.hit_floor).where(*where)
            ).first()
            if row is None:
                return None
            similarity = float(np.dot(np.frombuffer(row.embedding, dtype=np.float32), query))
            if row.hit_floor is None or similarity > row.hit_floor:
                conn.execute(update(entries).where(*where).values(hit_floor=similarity))
            updated = conn.execute(select(entries).where(*where)).one()
        return entry_from_row(updated._mapping), similarity

    def record_hits(self, hits: Mapping[int, tuple[int, float]]) -> None:
        if not hits:
            return
        rows = [{"rid": r, "n": n, "at": at} for r, (n, at) in hits.items()]
        with self.sql.writing(), self.sql.transaction() as conn:
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

    def sweep_expired(self, now: float) -> int:
        return self._delete_where([entries.c.expires_at <= now])

    def _delete_where(self, conditions: list[Any]) -> int:
        with self.sql.writing():
            with self.sql.transaction() as conn:
                gone = conn.execute(
                    delete(entries)
                    .where(*conditions)
                    .returning(entries.c.row_id, entries.c.partition_key)
                ).all()
                deletes_mark = self._own_deletes(conn, len(gone))
            self._deletes_advance(deletes_mark)
            by_partition: dict[str, list[int]] = defaultdict(list)
            for row_id, key in gone:
                by_partition[key].append(row_id)
            for key, ids in by_partition.items():
                self.vectors.remove(key, ids)
        return len(gone)

    def check(self) -> None:
        self.sql.check(self.index_dir.parent)

    def attribution(self) -> AttributionStore:
        return AttributionStore(self.engine)

    def flush(self) -> None:
        if self._closed:
            return  # a periodic save that started as the server stopped
        if self._owner_lock is None:
            # The owner released the files (it closed after its last save): this process's
            # indexes, caught up from SQL, hold every row the files did but those deleted
            # elsewhere (which the next start's reconcile drops).
            self._owner_lock = IndexDirLock.try_acquire(self.index_dir)
            if self._owner_lock is not None:
                log.info("this process now owns the vector index files in %s", self.index_dir)
                self.vectors.take_ownership()
        self.vectors.save()
        self._prune_tombstones()

    def _prune_tombstones(self) -> None:
        """The owner deletes the tombstones every process has read (``sql_sync``)."""
        if self._owner_lock is not None and self._deletes is not None and self.sql.damaged is None:
            ForeignDeletes.prune_old(self.sql)

    def catch_up(self) -> int:
        """Index the rows other processes committed since the last call, and drop the vectors
        of the rows they deleted; returns how many rows were indexed."""
        if self._closed or self.sql.damaged is not None:  # a damaged file is left alone
            return 0
        deletes = self._deletes
        with self._read() as conn:
            # The usual second: nothing new, and no lock taken.
            adds_behind = self._foreign.behind(conn)
            deletes_behind = deletes is not None and deletes.behind(conn)
        added = dropped = 0
        more = adds_behind
        while more:
            # Round by round, so stores wait for one chunk at most.
            with self.sql.writing(), self._read() as conn:
                count, more = catch_up_round(conn, self._foreign, self.vectors)
            added += count
        # After the adds: a row added and deleted elsewhere since the last look is gone.
        more = deletes_behind
        while more and deletes is not None:
            with self.sql.writing(), self._read() as conn:
                count, more = deletes.drop_round(conn, self.vectors)
            dropped += count
        if added:
            log.info("indexed %d entries other processes stored", added)
        if dropped:
            log.info("dropped the vectors of %d entries other processes deleted", dropped)
        return added

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.vectors.close()
        finally:
            self._release()

    def _release(self) -> None:
        try:
            self.engine.dispose()
        finally:
            if self._owner_lock is not None:
                # Files first, lock second: a save still waiting must not write after a new
                # owner has taken them.
                self.vectors.give_up_files()
                self._owner_lock.release()
                self._owner_lock = None


def _row(entry: NewEntry, embedding: bytes) -> dict[str, Any]:
    return {**entry.columns(), "embedding": embedding}


def _may_hit(entry: Entry, similarity: float) -> bool:
    # An entry reported as a wrong hit answers only queries closer than the reported one; the
    # search widens past floored entries as it does past other conversations', so a floored
    # top k cannot hide a match.
    return entry.hit_floor is None or similarity > entry.hit_floor + HIT_FLOOR_MARGIN


# The search's row read, built once as the exact lookup's is (sql_entries); it leaves out the
# embedding, which no Entry carries.
_LIVE = select(*ENTRY_COLUMNS).where(
    entries.c.row_id.in_(bindparam("row_ids", expanding=True)),
    entries.c.tenant == bindparam("tenant"),
    entries.c.partition_key == bindparam("partition_key"),
    entries.c.context_hash == bindparam("context_hash"),
    entries.c.expires_at > bindparam("now"),
)
