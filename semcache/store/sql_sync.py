"""Keeping a process's vector indexes in step with SQL, which is the truth.

At start, ``reconcile`` makes the saved index files agree with the rows SQL holds. While
serving, other processes may commit rows to the same database (`semcache import` beside a
running server, a second server on the data dir): ``ForeignRows`` finds them by row id and
``catch_up`` adds their stored embeddings to this process's indexes, without re-embedding, so
an imported entry is found semantically within a second of its commit.

Why row ids are enough: they are AUTOINCREMENT (never handed out twice) and SQLite commits one
writer at a time in id order, so a read sees every committed row below the highest id it sees.
That holds for SQLite only; a database that hands out ids before commit (MySQL) could commit a
lower id after a higher one was seen, and this would miss it until the next start.

Deletes travel the same way: on SQLite a trigger writes a tombstone (``deleted_rows``, revision
0007) for every deleted entry in the deleting transaction, and ``ForeignDeletes`` drops the
vectors of the tombstones above its own mark (this process's own deletes are already gone from
its indexes; dropping an absent id does nothing). The owner of the index files prunes
tombstones older than ``DELETED_ROWS_KEEP_S``; a process stalled longer than that keeps the
vectors of rows deleted meanwhile until its next start. That is harmless: a search reads each
candidate's row from SQL and drops those that are gone; the dead vectors only take neighbour
slots.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import (
    Column,
    Connection,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    func,
    select,
)

from ..errors import StorageError
from .schema import entries
from .vectors import VectorIndexes

if TYPE_CHECKING:
    from .sqlite import SqliteAccess

__all__ = [
    "DELETED_ROWS_KEEP_S",
    "ForeignDeletes",
    "ForeignRows",
    "catch_up_round",
    "load_embeddings",
    "reconcile",
]

log = logging.getLogger(__name__)

# Rows read per round of a catch-up: bounds how long a round holds the store's write lock.
CATCH_UP_CHUNK = 2048
# Tombstones older than this are pruned: every running process reads them within a second.
DELETED_ROWS_KEEP_S = 600.0
# How far past that the oldest may be before a prune: batches the pruning of steady deletes.
PRUNE_SLACK_S = 60.0

# Made by revision 0007 on SQLite only; not in schema.py, whose tables both backends have.
_meta = MetaData()
deleted_rows = Table(
    "deleted_rows",
    _meta,
    Column("seq", Integer, primary_key=True),
    Column("row_id", Integer, nullable=False),
    Column("partition_key", String(16), nullable=False),
    Column("deleted_at", Float, nullable=False),
)


def load_embeddings(conn: Connection, row_ids: Sequence[int]) -> dict[int, np.ndarray]:
    """The stored embedding of each row id that still exists."""
    rows = conn.execute(
        select(entries.c.row_id, entries.c.embedding).where(entries.c.row_id.in_(row_ids))
    )
    return {r: np.frombuffer(blob, dtype=np.float32) for r, blob in rows}


def reconcile(
    conn: Connection, vectors: VectorIndexes, verify_all: bool
) -> tuple[dict[str, int], ForeignRows, ForeignDeletes | None]:
    """Load the saved indexes and make them agree with SQL (``VectorIndexes.reconcile``);
    returns what was done, the feed of rows committed after the ids read here and that of
    rows deleted after them (None where the database keeps no tombstones)."""
    # The tombstones' mark first: a delete committed between the two reads is then both
    # missing from the ids and above the mark, dropped (as a no-op) by the first catch-up.
    deletes = ForeignDeletes.start(conn)
    ids: dict[str, set[int]] = defaultdict(set)
    top = 0
    # One statement, so one snapshot: every row below its highest id is in it.
    for row_id, key in conn.execute(select(entries.c.row_id, entries.c.partition_key)):
        ids[key].add(row_id)
        top = max(top, row_id)
    report = vectors.reconcile(
        ids, lambda chunk: load_embeddings(conn, chunk), verify_all=verify_all
    )
    log.info("vector indexes reconciled with SQL: %s", report)
    return report, ForeignRows(top), deletes


class ForeignRows:
    """The rows committed by other processes since the last look.

    ``high_water``: every row at or below it is in this process's indexes or gone. Rows this
    process writes above it are remembered (``wrote``) so a catch-up skips them. Callers
    serialise ``wrote``, ``peek`` and ``advance`` (the store's write lock), so no write of
    this process is half done while ``peek`` reads.
    """

    def __init__(self, high_water: int) -> None:
        self.high_water = high_water
        self._own: set[int] = set()

    def wrote(self, row_ids: Sequence[int]) -> None:
        """Record this process's new rows (after their commit)."""
        if not row_ids:
            return
        # The usual case, nobody else writing: the ids follow on, and the mark just moves.
        contiguous = row_ids[-1] - row_ids[0] == len(row_ids) - 1
        if not self._own and contiguous and row_ids[0] == self.high_water + 1:
            self.high_water = row_ids[-1]
        else:
            self._own.update(row_ids)

    def behind(self, conn: Connection) -> bool:
        """Whether SQL holds a row above the mark: a cheap look before taking any lock."""
        top = conn.execute(select(func.max(entries.c.row_id))).scalar_one_or_none()
        return top is not None and int(top) > self.high_water

    def peek(self, conn: Connection) -> tuple[list[tuple[int, str]], int, bool]:
        """(row id, partition key) of up to ``CATCH_UP_CHUNK`` foreign rows above the mark,
        the mark past them (for ``advance`` once they are indexed), and whether more may
        follow."""
        rows = conn.execute(
            select(entries.c.row_id, entries.c.partition_key)
            .where(entries.c.row_id > self.high_water)
            .order_by(entries.c.row_id)
            .limit(CATCH_UP_CHUNK)
        ).all()
        if not rows:
            return [], self.high_water, False
        foreign = [(int(r), str(k)) for r, k in rows if r not in self._own]
        return foreign, int(rows[-1][0]), len(rows) == CATCH_UP_CHUNK

    def advance(self, mark: int) -> None:
        """Every row up to ``mark`` is indexed (or gone): forget this process's ids below."""
        self.high_water = max(self.high_water, mark)
        self._own = {r for r in self._own if r > self.high_water}


def catch_up_round(conn: Connection, feed: ForeignRows, vectors: VectorIndexes) -> tuple[int, bool]:
    """Index one chunk of foreign rows: (rows added, whether more may follow). The mark moves
    only once every add succeeded, so a failed round is retried whole by the next one."""
    rows, mark, more = feed.peek(conn)
    stored = load_embeddings(conn, [r for r, _ in rows]) if rows else {}
    by_partition: dict[str, list[int]] = defaultdict(list)
    for row_id, key in rows:
        if row_id in stored:
            by_partition[key].append(row_id)
    for key, row_ids in by_partition.items():
        matrix = np.vstack([stored[r] for r in row_ids])
        # No waiting for a large partition's merge: this holds the store's write lock.
        vectors.add(key, row_ids, matrix, wait=False)
    feed.advance(mark)
    return sum(len(ids) for ids in by_partition.values()), more


def _top_tombstone(conn: Connection) -> int:
    """The newest tombstone's seq, 0 when there is none."""
    return int(conn.execute(select(func.max(deleted_rows.c.seq))).scalar_one_or_none() or 0)


class ForeignDeletes:
    """The entries deleted since the last look, read from the ``deleted_rows`` tombstones.

    ``mark``: the last tombstone seen. Callers serialise ``behind``, ``drop_round`` and the
    store's own deletes (the store's write lock), as for ``ForeignRows``.
    """

    def __init__(self, mark: int) -> None:
        self.mark = mark

    @classmethod
    def start(cls, conn: Connection) -> ForeignDeletes | None:
        """The feed from the newest tombstone on; None where there are none to read (not
        SQLite, whose migration makes the table and its trigger)."""
        if conn.dialect.name != "sqlite":
            return None
        return cls(_top_tombstone(conn))

    def behind(self, conn: Connection) -> bool:
        return _top_tombstone(conn) > self.mark

    def mark_after_own(self, conn: Connection, deleted: int) -> int | None:
        """Inside this process's deleting transaction: the mark to move to once it commits
        (``advance``), when every tombstone above the mark is one of its ``deleted`` rows, so
        that a catch-up has nothing to read; None when others' are among them (a catch-up
        reads them, and drops nothing for these). Moved only after the commit: a rolled-back
        transaction's seq numbers are handed out again."""
        if not deleted:
            return None
        top = _top_tombstone(conn)
        return top if top == self.mark + deleted else None

    def advance(self, mark: int | None) -> None:
        if mark is not None:
            self.mark = max(self.mark, mark)

    def drop_round(self, conn: Connection, vectors: VectorIndexes) -> tuple[int, bool]:
        """Drop the vectors of one chunk of tombstones: (vectors dropped, whether more may
        follow). This process's own deletes are no longer indexed and drop nothing."""
        rows = conn.execute(
            select(deleted_rows.c.seq, deleted_rows.c.row_id, deleted_rows.c.partition_key)
            .where(deleted_rows.c.seq > self.mark)
            .order_by(deleted_rows.c.seq)
            .limit(CATCH_UP_CHUNK)
        ).all()
        if not rows:
            return 0, False
        by_partition: dict[str, list[int]] = defaultdict(list)
        for _, row_id, key in rows:
            by_partition[str(key)].append(int(row_id))
        dropped = sum(vectors.remove(key, ids) for key, ids in by_partition.items())
        self.mark = int(rows[-1][0])
        return dropped, len(rows) == CATCH_UP_CHUNK

    @classmethod
    def prune_old(cls, sql: SqliteAccess) -> None:
        """Prune the tombstones every process has had time to read, when due (``prune_due``);
        a failure only leaves them for the next call."""
        now = time.time()
        with sql.read() as conn:
            if not cls.prune_due(conn, now):
                return
        try:
            with sql.writing(), sql.transaction() as conn:
                pruned = cls.prune(conn, now)
        except StorageError as exc:
            # The save before this succeeded; old tombstones only wait for the next one.
            log.warning("could not prune tombstones of deleted entries: %s", exc.message)
            return
        log.debug("pruned %d tombstones of deleted entries", pruned)

    @staticmethod
    def prune_due(conn: Connection, now: float) -> bool:
        """Whether the oldest tombstone is past its time by ``PRUNE_SLACK_S`` (so that a
        steady stream of deletes is pruned once a minute, not at every save): a read, before
        taking any lock."""
        # The first by seq is the oldest (commit order): one primary-key step, no scan.
        oldest = conn.execute(
            select(deleted_rows.c.deleted_at).order_by(deleted_rows.c.seq).limit(1)
        ).scalar_one_or_none()
        return oldest is not None and float(oldest) < now - DELETED_ROWS_KEEP_S - PRUNE_SLACK_S

    @staticmethod
    def prune(conn: Connection, now: float) -> int:
        """Delete the tombstones every running process has had time to read: those below the
        first young one in seq (commit) order, a primary-key range."""
        cutoff = now - DELETED_ROWS_KEEP_S
        first_young = conn.execute(
            select(deleted_rows.c.seq)
            .where(deleted_rows.c.deleted_at >= cutoff)
            .order_by(deleted_rows.c.seq)
            .limit(1)
        ).scalar_one_or_none()
        old = (
            deleted_rows.c.deleted_at < cutoff
            if first_young is None
            else deleted_rows.c.seq < int(first_young)
        )
        return int(conn.execute(delete(deleted_rows).where(old)).rowcount)
