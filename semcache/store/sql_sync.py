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

A row another process deletes stays in this process's indexes (and, in the owner, its files)
until its next start. No wrong answer comes of it, since a search reads each candidate's row
from SQL and drops those that are gone, but the dead vectors take neighbour slots until then.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from sqlalchemy import Connection, func, select

from .schema import entries
from .vectors import VectorIndexes

__all__ = ["ForeignRows", "catch_up_round", "load_embeddings", "reconcile"]

log = logging.getLogger(__name__)

# Rows read per round of a catch-up: bounds how long a round holds the store's write lock.
CATCH_UP_CHUNK = 2048


def load_embeddings(conn: Connection, row_ids: Sequence[int]) -> dict[int, np.ndarray]:
    """The stored embedding of each row id that still exists."""
    rows = conn.execute(
        select(entries.c.row_id, entries.c.embedding).where(entries.c.row_id.in_(row_ids))
    )
    return {r: np.frombuffer(blob, dtype=np.float32) for r, blob in rows}


def reconcile(
    conn: Connection, vectors: VectorIndexes, verify_all: bool
) -> tuple[dict[str, int], ForeignRows]:
    """Load the saved indexes and make them agree with SQL (``VectorIndexes.reconcile``);
    returns what was done and the feed of rows committed after the ids read here."""
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
    return report, ForeignRows(top)


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
