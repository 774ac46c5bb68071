"""A large partition's index: an IVF (or HNSW) graph with tombstones and an exact fresh segment.

See ``faiss_index`` for how the pieces fit; the files are ``approx_files``'. "Graph" below is
the approximate index, whichever kind ``IndexOptions.kind`` names:

- ``ivf`` (the default): ``IndexIVFFlat``, k-means lists over exact vectors, searched in the
  ``nprobe`` lists nearest the query. Measured at 1M clustered 384-d entries
  (benchmarks/scale.py): recall@1 0.99+ at p99 under 3 ms, and adds cost a list assignment
  (thousands a second) where an HNSW insertion costs a graph search. Its lists are trained on
  the vectors it starts with, ``ivf_lists(n)`` of them; once the partition holds 4x what they
  were trained for, the background thread trains and fills a new one while the old serves.
- ``hnsw``: ``IndexHNSWFlat``, kept for data dirs that have one and as a setting; at 1M it
  reached recall@1 0.96 at efSearch 400 and 0.99 only at 17 ms p99.
"""

from __future__ import annotations

import logging
import struct
import threading
import zlib
from typing import Any

import faiss
import numpy as np

from .approx_graph import (
    fill_graph,
    graph_kind,
    ivf_lists,
    ivf_training_size,
    new_graph,
    release_freed_memory,
    untrained,
)
from .faiss_index import IndexOptions, RWLock, hits, new_flat, one_thread

__all__ = ["RECORD", "ApproxPartition", "record"]

log = logging.getLogger(__name__)

# Vectors moved from the fresh segment into the graph per exclusive hold: a search waits for at
# most this many insertions (tens of milliseconds on 2 cores). An IVF add is a list assignment,
# but each list it lands in may be reallocated (copied, hundreds of KB at a million entries).
_MERGE_CHUNK = {"hnsw": 64, "ivf": 256}
# An IVF graph is retrained once the partition would get this many times its lists (4x the
# vectors it was trained for): lists stay short enough that nprobe of them are read quickly.
_IVF_REGROW_LISTS = 2
# A log record's header: kind (A add, D delete), count, crc32 of the payload.
RECORD = struct.Struct("<cII")


class ApproxPartition:
    """An IVF or HNSW graph with tombstones and an exact fresh segment; see the module docstring."""

    def __init__(self, dim: int, options: IndexOptions, graph: Any = None) -> None:
        self.dim = dim
        self.options = options
        self.lock = RWLock()
        # Held by every change (before the write lock) and by a save instead of the read lock:
        # a snapshot, seconds of writing at a million vectors, then stops changes but not
        # searches (a writer queued on the read-write lock would stop those too).
        self.mutation = threading.Lock()
        # An IVF graph is trained on the first vectors merged (``_train``); until then, none.
        self._graph = graph if graph is not None else untrained(dim, options)
        self._labels = np.zeros(0, dtype=np.int64)  # graph position -> row id
        self._dead = np.zeros(1, dtype=np.uint8)  # tombstones, one bit per position
        self._n_dead = 0
        self._pos: dict[int, int] = {}  # live row id -> graph position
        self._fresh = new_flat(dim)  # vectors not in the graph yet
        self._selector: Any = None
        self._room = threading.Condition()
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._rebuilding = False
        self._changed: list[int] = []  # ids dropped from the graph while a rebuild runs
        # Persistence: the log (records since snapshot ``generation``) and what it lacks.
        self.generation = 0
        self.snapshot_needed = True
        self.log_ok = False  # False: the log file must be started again before appending
        self.pending: list[bytes] = []
        self.logged_adds = 0
        self.snapshot_size = 0

    # -- state ----------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return graph_kind(self._graph)

    @property
    def size(self) -> int:
        return len(self._pos) + int(self._fresh.ntotal)

    @property
    def graph_size(self) -> int:
        return int(self._graph.ntotal)

    @property
    def deleted(self) -> int:
        return self._n_dead

    def _set_graph(
        self, graph: Any, labels: np.ndarray, dead: np.ndarray, pos: dict[int, int] | None = None
    ) -> None:
        """Install a graph with its labels and packed tombstone bits (under the write lock);
        ``pos``, the live ids' positions, when the caller built it already."""
        self._graph = graph
        self._labels = labels
        self._dead = np.zeros(len(labels) // 8 + 1, dtype=np.uint8)
        self._dead[: len(dead)] = dead
        alive = ~np.unpackbits(self._dead, bitorder="little")[: len(labels)].astype(bool)
        self._n_dead = int(len(labels) - alive.sum())
        if pos is None:
            pos = dict(zip(labels[alive].tolist(), np.flatnonzero(alive).tolist(), strict=True))
        self._pos = pos
        self._refresh_selector()

    def _refresh_selector(self) -> None:
        if not self._n_dead:
            self._selector = None
            return
        # FAISS keeps a pointer to the bits, so the array (reallocated as the graph grows) is
        # referenced here for as long as the selector lives.
        bitmap = faiss.IDSelectorBitmap(len(self._dead), faiss.swig_ptr(self._dead))
        self._selector = (faiss.IDSelectorNot(bitmap), bitmap, self._dead)

    def _kill(self, position: int) -> None:
        self._dead[position >> 3] |= np.uint8(1 << (position & 7))
        self._n_dead += 1

    def _forget(self, ids: np.ndarray) -> np.ndarray:
        """Drop ids from graph and fresh segment (write lock held); returns those dropped."""
        gone = []
        for row_id in ids.tolist():
            position = self._pos.pop(row_id, None)
            if position is not None:
                self._kill(position)
                gone.append(row_id)
        if self._rebuilding:
            self._changed.extend(gone)
        dropped = np.array(gone, dtype=np.int64)
        if self._fresh.ntotal:
            # Only the ids the fresh segment holds: the count is returned and logged.
            in_fresh = np.intersect1d(ids, faiss.vector_to_array(self._fresh.id_map))
            if in_fresh.size:
                self._fresh.remove_ids(in_fresh.astype(np.int64))
                dropped = np.union1d(dropped, in_fresh)
        self._refresh_selector()
        return dropped

    # -- CacheStore operations ---------------------------------------------------------------

    def add(
        self, ids: np.ndarray, matrix: np.ndarray, *, log_it: bool = True, wait: bool = True
    ) -> None:
        """Put vectors in the fresh segment; an id present already is replaced. Waits while
        the segment is full (the merge thread empties it) unless a rebuild runs. Full is twice
        the threshold: a partition that just crossed it starts with the threshold's worth in
        the segment, and its stores should not wait for all of those to be merged."""
        with self._room:
            while (
                wait
                and self._fresh.ntotal >= 2 * self.options.approximate_min_entries
                and not self._rebuilding
                and self._worker is not None
                and not self._stop.is_set()
            ):
                self._room.wait(0.5)
        with self.mutation, self.lock.exclusive():
            self._forget(ids)
            self._fresh.add_with_ids(matrix, ids)
            if log_it:
                self.pending.append(record(b"A", ids, matrix))
                self.logged_adds += len(ids)
        self._start_worker()

    def remove(self, ids: np.ndarray, *, log_it: bool = True) -> int:
        """Forget these ids (unknown ones are ignored); returns how many were indexed."""
        with self.mutation, self.lock.exclusive():
            dropped = self._forget(ids)
            if log_it and len(dropped):
                self.pending.append(record(b"D", dropped, None))
        if len(dropped) and self._rebuild_due():
            self._start_worker()
        return len(dropped)

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        with self.lock.shared(), one_thread():
            found: list[tuple[int, float]] = []
            if self._pos:
                params = self._search_params(k)
                if self._selector is not None:
                    params.sel = self._selector[0]
                scores, positions = self._graph.search(query, min(k, len(self._pos)), params=params)
                found = [
                    (int(self._labels[p]), float(s))
                    for p, s in zip(positions[0], scores[0], strict=True)
                    if p >= 0
                ]
            if self._fresh.ntotal:
                scores, ids = self._fresh.search(query, min(k, self._fresh.ntotal))
                found.extend(hits(scores[0], ids[0]))
        return sorted(found, key=lambda hit: hit[1], reverse=True)[:k]

    def _search_params(self, k: int) -> Any:
        params: Any
        if isinstance(self._graph, faiss.IndexIVF):
            params = faiss.SearchParametersIVF()
            params.nprobe = min(self.options.nprobe, self._graph.nlist)
        else:
            params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # not in the stubs
            params.efSearch = max(self.options.ef_search, k)
        return params

    def live_ids(self) -> np.ndarray:
        with self.lock.shared():
            fresh = faiss.vector_to_array(self._fresh.id_map).astype(np.int64)
            return np.concatenate([np.fromiter(self._pos, dtype=np.int64), fresh])

    def vector(self, row_id: int) -> np.ndarray:
        with self.lock.shared():
            position = self._pos.get(row_id)
            if position is None:
                return np.asarray(self._fresh.reconstruct(row_id))
            return np.asarray(self._graph.reconstruct(position))

    def export(self) -> tuple[np.ndarray, np.ndarray]:
        with self.lock.shared():
            ids = np.fromiter(self._pos, dtype=np.int64)
            positions = np.fromiter(self._pos.values(), dtype=np.int64)
            graph = self._graph.reconstruct_batch(positions) if len(ids) else None
            fresh_ids = faiss.vector_to_array(self._fresh.id_map).astype(np.int64)
            fresh = faiss.downcast_index(self._fresh.index).reconstruct_n(0, len(fresh_ids))
        parts = [m.reshape(-1, self.dim) for m in (graph, fresh) if m is not None]
        return np.concatenate([ids, fresh_ids]), np.vstack(parts)

    # -- background work: merging the fresh segment, rebuilding ------------------------------

    def _rebuild_due(self) -> bool:
        """Past the deleted fraction; an IVF graph outgrown; a graph not of the kind set."""
        total = self.graph_size
        if not total:
            return False
        if self._n_dead > self.options.rebuild_deleted_fraction * total:
            return True
        if graph_kind(self._graph) != self.options.kind:
            return True
        nlist = getattr(self._graph, "nlist", 0)
        return bool(nlist) and ivf_lists(len(self._pos)) >= _IVF_REGROW_LISTS * nlist

    def _start_worker(self) -> None:
        with self._room:
            if self._worker is None and not self._stop.is_set():
                self._worker = threading.Thread(
                    target=self._work, name="semcache-index", daemon=True
                )
                self._worker.start()

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                if self._rebuild_due():
                    self._rebuild()
                elif not self._merge_some():
                    with self._room:
                        # Checked under the lock _start_worker takes: an add that found this
                        # thread still running has put its vectors in the segment by now.
                        if not self._fresh.ntotal and not self._rebuild_due():
                            self._worker = None
                            self._room.notify_all()
                            return
        except (RuntimeError, MemoryError) as exc:  # FAISS reports its failures so
            log.error("index maintenance stopped: %s; vectors wait in the exact segment", exc)
        finally:
            with self._room:
                if self._worker is threading.current_thread():
                    self._worker = None
                self._room.notify_all()

    def _train(self) -> None:
        """Give an untrained (empty IVF) graph its lists, from the fresh segment's vectors;
        k-means runs outside the locks, so searches and stores go on meanwhile."""
        with self.lock.shared():
            size = int(self._fresh.ntotal)
            sample = faiss.downcast_index(self._fresh.index).reconstruct_n(
                0, ivf_training_size(size)
            )
        graph = new_graph(self.dim, self.options, sample.reshape(-1, self.dim), size)
        with self.mutation, self.lock.exclusive():
            if not self._graph.ntotal:
                self._set_graph(graph, np.zeros(0, dtype=np.int64), np.zeros(1, dtype=np.uint8))
                self.snapshot_needed = True

    def _merge_some(self) -> bool:
        """Move one chunk of the fresh segment into the graph; False when it was empty."""
        if not self._graph.is_trained and self._fresh.ntotal:
            self._train()
        # Searches queued behind the last chunk go first: a backlog (after a rebuild, tens of
        # thousands of vectors) is drained between searches, not in one multi-second hold.
        self.lock.let_readers_in()
        with self.mutation, self.lock.exclusive():
            count = min(_MERGE_CHUNK[graph_kind(self._graph)], int(self._fresh.ntotal))
            if not count:
                return False
            ids = faiss.vector_to_array(self._fresh.id_map)[:count].astype(np.int64)
            matrix = faiss.downcast_index(self._fresh.index).reconstruct_n(0, count)
            start = self.graph_size
            self._graph.add(matrix)
            self._fresh.remove_ids(ids)
            self._labels = _grown(self._labels, start + count)
            self._labels[start : start + count] = ids
            if len(self._dead) * 8 <= start + count:
                self._dead = _grown(self._dead, (start + count) // 8 + 1)
                self._refresh_selector()
            self._pos.update(zip(ids.tolist(), range(start, start + count), strict=True))
        with self._room:
            self._room.notify_all()
        return True

    def _rebuild(self) -> None:
        """A new graph of the live vectors, built while the old one serves; deletes made
        meanwhile are carried over at the swap (merges wait: this thread does both)."""
        with self.lock.shared():
            self._rebuilding = True
            positions = np.fromiter(self._pos.values(), dtype=np.int64)
            ids = np.fromiter(self._pos, dtype=np.int64)
        try:
            sample = None
            if self.options.kind == "ivf":
                rng = np.random.default_rng(len(positions))
                picked = rng.choice(positions, ivf_training_size(len(positions)), replace=False)
                with self.lock.shared():
                    sample = self._graph.reconstruct_batch(np.sort(picked))
            graph = new_graph(self.dim, self.options, sample, len(positions))
            del sample
            if not self._fill(graph, positions):
                return
            # Built outside the lock (searches wait while the swap holds it), and in parts:
            # one dict() call over a million ids would hold the GIL for a third of a second.
            pos: dict[int, int] = {}
            for start in range(0, len(ids), 65_536):
                part = ids[start : start + 65_536].tolist()
                pos.update(zip(part, range(start, start + len(part)), strict=True))
            with self.mutation, self.lock.exclusive():
                # A row deleted (or replaced) during the build is a tombstone in the new graph.
                stale = np.isin(ids, np.array(self._changed, dtype=np.int64))
                for row_id in ids[stale].tolist():
                    del pos[row_id]
                self._set_graph(graph, ids, np.packbits(stale, bitorder="little"), pos)
                self.snapshot_needed = True
            log.info(
                "rebuilt a partition's %s index: %d live vectors, tombstones dropped",
                graph_kind(graph),
                len(self._pos),
            )
        finally:
            self._rebuilding = False
            self._changed = []
        release_freed_memory()

    def _fill(self, graph: Any, positions: np.ndarray) -> bool:
        """The current graph's vectors at ``positions`` into ``graph``; False if stopped."""
        return fill_graph(graph, positions, self._read_graph, self._stop.is_set)

    def _read_graph(self, positions: np.ndarray) -> np.ndarray:
        with self.lock.shared():
            return np.asarray(self._graph.reconstruct_batch(positions))

    def wait_idle(self, timeout: float) -> bool:
        """Wait until the fresh segment is merged and no rebuild is due (tests, benchmarks)."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
        return self._worker is None and not self._fresh.ntotal and not self._rebuild_due()

    def stop(self) -> None:
        self._stop.set()
        worker = self._worker
        if worker is not None:
            worker.join()

    # -- what the files hold (approx_files) ------------------------------------------------------

    def state(self) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The graph, its labels and packed tombstones, the fresh segment's ids and vectors;
        the caller holds ``mutation`` for as long as it uses the graph."""
        n = self.graph_size
        fresh_ids = faiss.vector_to_array(self._fresh.id_map).astype(np.int64)
        fresh = faiss.downcast_index(self._fresh.index).reconstruct_n(0, len(fresh_ids))
        vectors = np.ascontiguousarray(fresh, dtype=np.float32).reshape(-1, self.dim)
        return self._graph, self._labels[:n], self._dead[: n // 8 + 1], fresh_ids, vectors

    def install(self, graph: Any, labels: np.ndarray, dead: np.ndarray) -> None:
        """Start from a loaded graph (its labels and packed tombstones)."""
        with self.mutation, self.lock.exclusive():
            self._set_graph(graph, labels, dead)

    def resume(self) -> None:
        """After a load: rebuild in the background a graph of another kind than the options
        name, or one outgrown."""
        if self._rebuild_due():
            self._start_worker()


def record(kind: bytes, ids: np.ndarray, matrix: np.ndarray | None) -> bytes:
    payload = np.ascontiguousarray(ids, dtype=np.int64).tobytes()
    if matrix is not None:
        payload += np.ascontiguousarray(matrix, dtype=np.float32).tobytes()
    return RECORD.pack(kind, len(ids), zlib.crc32(payload)) + payload


def _grown(array: np.ndarray, needed: int) -> np.ndarray:
    """``array`` with room for ``needed`` items (doubling, so appends stay amortised O(1))."""
    if len(array) >= needed:
        return array
    bigger = np.zeros(max(needed, 2 * len(array)), dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger
