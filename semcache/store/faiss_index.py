"""One partition's FAISS index: exact while small, approximate (IVF or HNSW) with tombstones
once large.

This module has what both kinds share and the exact kind; ``approx_index`` the large kind,
``approx_files`` its files. ``FlatPartition`` is an ``IndexIDMap2`` over ``IndexFlatIP`` keyed
by SQL row id, saved whole to ``<key>.faiss``: exact, and cheap to rewrite while small.
``ApproxPartition`` (past ``approximate_min_entries``) keeps an approximate index, the
"graph": ``IndexIVFFlat`` by default, ``IndexHNSWFlat`` where set (inner product either way,
so scores stay cosine similarities; ``approx_graph``) plus a small exact "fresh" segment:

- adds land in the fresh segment (a memory copy); a background thread moves them into the
  graph in small chunks, so a search waits at most for one chunk's insertion, and a writer
  waits only while the fresh segment is full (twice ``approximate_min_entries`` vectors, so an
  exact scan never covers more than twice what a flat partition at the threshold would);
- deletes (expiry included) set a tombstone bit that searches filter inside FAISS
  (``IDSelectorNot(IDSelectorBitmap)``; HNSW cannot remove, an IVF removal scans every
  list); past ``rebuild_deleted_fraction`` the thread rebuilds the graph from the live
  vectors while the old one serves, and an IVF graph is retrained the same way as the
  partition grows;
- persistence (``approx_files``) is a snapshot plus an append-only log of the ``record``s made
  since, so a periodic save appends what is new; a start loads the snapshot and puts the log's
  adds in the fresh segment: nothing is re-embedded, nothing waits for graph insertion.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..errors import StorageError

__all__ = ["FlatPartition", "IndexOptions", "RWLock", "hits", "new_flat", "one_thread"]


@dataclass(frozen=True)
class IndexOptions:
    """When a partition turns approximate, how hard it searches, when it is rebuilt."""

    approximate_min_entries: int = 20_000
    # The approximate index: "ivf" (IndexIVFFlat) or "hnsw" (IndexHNSWFlat); see approx_index.
    kind: str = "ivf"
    # IVF lists read per search. Measured at 1M clustered 384-d entries: see approx_index.
    nprobe: int = 32
    # HNSW's efSearch. Measured at 300k clustered 384-d entries: recall@1 0.968 at 100, 0.988
    # at 200, 0.994 at 400 (benchmarks/results/scale_ef.md); 0.958 at 400 at 1M.
    ef_search: int = 400
    rebuild_deleted_fraction: float = 0.2
    # A new snapshot once the log holds this fraction of the snapshot's vectors as adds.
    snapshot_log_fraction: float = 0.1


class RWLock:
    """Many readers (searches, saves) or one writer (adds, deletes); writers go first, so a
    stream of searches cannot starve a store. A writer that takes the lock again and again
    (the merge thread draining a backlog) calls ``let_readers_in`` between turns, or it would
    starve the searches instead."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting = 0
        self._queued_readers = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            waited = self._writer or self._waiting
            self._queued_readers += 1
            while self._writer or self._waiting:
                self._cond.wait()
            self._queued_readers -= 1
            self._readers += 1
            # Only the last of the readers that queued can free a writer in let_readers_in;
            # an uncontended search (the usual one) notifies nobody.
            if waited and not self._queued_readers:
                self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()

    def let_readers_in(self, timeout: float = 0.05) -> None:
        """Wait (at most ``timeout``) until the readers queued behind the last write have the
        lock; they may be behind another writer, hence the bound."""
        with self._cond:
            self._cond.wait_for(lambda: not self._queued_readers, timeout)


@contextmanager
def one_thread() -> Iterator[None]:
    # One query gains nothing from OpenMP's threads, and on shared cores waiting at their
    # barrier costs milliseconds; the setting is per calling thread.
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def new_flat(dim: int) -> Any:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def hits(scores: np.ndarray, ids: np.ndarray) -> list[tuple[int, float]]:
    return [(int(i), float(s)) for i, s in zip(ids, scores, strict=True) if i >= 0]


class FlatPartition:
    """Exact search; the file is rewritten whole on a save after a change."""

    kind = "flat"

    def __init__(self, dim: int, index: Any = None) -> None:
        self.dim = dim
        self.index = index if index is not None else new_flat(dim)
        self.lock = RWLock()
        self.dirty = False

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, matrix: np.ndarray) -> None:
        with self.lock.exclusive():
            self.index.add_with_ids(matrix, ids)
            self.dirty = True

    def remove(self, ids: np.ndarray) -> int:
        """Remove these ids (unknown ones are ignored); returns how many were indexed."""
        with self.lock.exclusive():
            removed = int(self.index.remove_ids(ids))
            if removed:
                self.dirty = True
        return removed

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        with self.lock.shared(), one_thread():
            if self.index.ntotal == 0:
                return []
            scores, ids = self.index.search(query, min(k, self.index.ntotal))
        return hits(scores[0], ids[0])

    def live_ids(self) -> np.ndarray:
        with self.lock.shared():
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def vector(self, row_id: int) -> np.ndarray:
        with self.lock.shared():
            return np.asarray(self.index.reconstruct(row_id))

    def export(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (row id, vector), to build the other kind from."""
        with self.lock.shared():
            ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
            matrix = faiss.downcast_index(self.index.index).reconstruct_n(0, self.index.ntotal)
        return ids, matrix.reshape(len(ids), self.dim)

    def save(self, path: Path) -> bool:
        """Write the index to ``path`` atomically if it changed; True if written."""
        tmp = path.with_name(path.name + ".tmp")
        with self.lock.shared():
            if not self.dirty:
                return False
            try:
                faiss.write_index(self.index, str(tmp))
                os.replace(tmp, path)
            except (OSError, RuntimeError) as exc:
                raise StorageError(f"cannot save vector index {path}: {exc}") from exc
            self.dirty = False
        return True
