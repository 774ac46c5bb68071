"""One partition's FAISS index: exact while small, HNSW with tombstones once large.

``FlatPartition`` is an ``IndexIDMap2`` over ``IndexFlatIP`` keyed by SQL row id, saved whole to
``<key>.faiss``: exact, and cheap to rewrite while small. ``HnswPartition`` (see
``approximate_min_entries``) keeps an ``IndexHNSWFlat`` graph (inner product, so scores stay
cosine similarities) plus a small exact "fresh" segment:

- adds land in the fresh segment (a memory copy); a background thread moves them into the
  graph in small chunks, so a search waits at most for one chunk's insertion, and a writer
  waits only while the fresh segment is full (``approximate_min_entries`` vectors, so an exact
  scan never covers more than a flat partition at the threshold would);
- HNSW cannot remove, so deletes (expiry included) set a tombstone bit that searches filter
  inside FAISS (``IDSelectorNot(IDSelectorBitmap)``); past ``rebuild_deleted_fraction`` the
  thread rebuilds the graph from the live vectors while the old one serves;
- persistence is a snapshot (``<key>.hnsw``: graph, labels, tombstones, fresh segment) plus an
  append-only log (``<key>.hlog``: CRC-checked add and delete records since the snapshot), so a
  periodic save appends what is new and the snapshot is rewritten only when the log's adds pass
  a fraction of it, after a rebuild, at shutdown or after a damaged log. A start loads the
  snapshot and puts the log's adds in the fresh segment: nothing is re-embedded, nothing waits
  for graph insertion.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import faiss
import numpy as np

from ..errors import StorageError

__all__ = ["FlatPartition", "HnswPartition", "IndexOptions", "RWLock", "load_hnsw"]

log = logging.getLogger(__name__)

# Measured (benchmarks/scale.py, 384-d near-duplicates): M=32 reaches recall@1 >= 0.99 at a
# small efSearch; efConstruction 40 builds about twice as fast as 80 for the same recall.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
# Vectors moved from the fresh segment into the graph per exclusive hold: a search waits for at
# most this many insertions (tens of milliseconds on 2 cores).
_MERGE_CHUNK = 64
_SNAPSHOT_MAGIC = b"SCHNSW1\n"
_LOG_MAGIC = b"SCHLOG1\n"
_SNAP_HEADER = struct.Struct("<QQQQ")  # generation, graph positions, fresh vectors, dim
_LOG_HEADER = struct.Struct("<Q")  # generation
_RECORD = struct.Struct("<cII")  # kind (A add, D delete), count, crc32 of the payload


@dataclass(frozen=True)
class IndexOptions:
    """When a partition turns approximate, how hard it searches, when it is rebuilt."""

    approximate_min_entries: int = 20_000
    ef_search: int = 100
    rebuild_deleted_fraction: float = 0.2
    # A new snapshot once the log holds this fraction of the snapshot's vectors as adds.
    snapshot_log_fraction: float = 0.1


class RWLock:
    """Many readers (searches, saves) or one writer (adds, deletes); writers go first, so a
    stream of searches cannot starve a store."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting:
                self._cond.wait()
            self._readers += 1
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


@contextmanager
def _one_thread() -> Iterator[None]:
    # One query gains nothing from OpenMP's threads, and on shared cores waiting at their
    # barrier costs milliseconds; the setting is per calling thread.
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _new_flat(dim: int) -> Any:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def _hits(scores: np.ndarray, ids: np.ndarray) -> list[tuple[int, float]]:
    return [(int(i), float(s)) for i, s in zip(ids, scores, strict=True) if i >= 0]


class FlatPartition:
    """Exact search; the file is rewritten whole on a save after a change."""

    kind = "flat"

    def __init__(self, dim: int, index: Any = None) -> None:
        self.dim = dim
        self.index = index if index is not None else _new_flat(dim)
        self.lock = RWLock()
        self.dirty = False

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, matrix: np.ndarray) -> None:
        with self.lock.exclusive():
            self.index.add_with_ids(matrix, ids)
            self.dirty = True

    def remove(self, ids: np.ndarray) -> None:
        with self.lock.exclusive():
            if self.index.remove_ids(ids):
                self.dirty = True

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        with self.lock.shared(), _one_thread():
            if self.index.ntotal == 0:
                return []
            scores, ids = self.index.search(query, min(k, self.index.ntotal))
        return _hits(scores[0], ids[0])

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


class HnswPartition:
    """An HNSW graph with tombstones and an exact fresh segment; see the module docstring."""

    kind = "hnsw"

    def __init__(self, dim: int, options: IndexOptions, graph: Any = None) -> None:
        self.dim = dim
        self.options = options
        self.lock = RWLock()
        self._graph = graph if graph is not None else _new_graph(dim)
        self._labels = np.zeros(0, dtype=np.int64)  # graph position -> row id
        self._dead = np.zeros(1, dtype=np.uint8)  # tombstones, one bit per position
        self._n_dead = 0
        self._pos: dict[int, int] = {}  # live row id -> graph position
        self._fresh = _new_flat(dim)  # vectors not in the graph yet
        self._selector: Any = None
        self._room = threading.Condition()
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._rebuilding = False
        # Persistence: the log (records since snapshot ``generation``) and what it lacks.
        self.generation = 0
        self.snapshot_needed = True
        self.log_ok = False  # False: the log file must be started again before appending
        self._pending: list[bytes] = []
        self._logged_adds = 0
        self._snapshot_size = 0

    # -- state ----------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self._pos) + int(self._fresh.ntotal)

    @property
    def graph_size(self) -> int:
        return int(self._graph.ntotal)

    @property
    def deleted(self) -> int:
        return self._n_dead

    def _set_graph(self, graph: Any, labels: np.ndarray, dead: np.ndarray) -> None:
        """Install a graph with its labels and packed tombstone bits (under the write lock)."""
        self._graph = graph
        self._labels = labels
        self._dead = np.zeros(len(labels) // 8 + 1, dtype=np.uint8)
        self._dead[: len(dead)] = dead
        alive = ~np.unpackbits(self._dead, bitorder="little")[: len(labels)].astype(bool)
        self._n_dead = int(len(labels) - alive.sum())
        self._pos = dict(zip(labels[alive].tolist(), np.flatnonzero(alive).tolist(), strict=True))
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
        dropped = np.array(gone, dtype=np.int64)
        if self._fresh.ntotal:
            in_fresh = int(self._fresh.remove_ids(ids))
            if in_fresh:
                dropped = np.union1d(dropped, ids)
        self._refresh_selector()
        return dropped

    # -- CacheStore operations ---------------------------------------------------------------

    def add(
        self, ids: np.ndarray, matrix: np.ndarray, *, log_it: bool = True, wait: bool = True
    ) -> None:
        """Put vectors in the fresh segment; an id present already is replaced. Waits while
        the segment is full (the merge thread empties it) unless a rebuild runs."""
        with self._room:
            while (
                wait
                and self._fresh.ntotal >= self.options.approximate_min_entries
                and not self._rebuilding
                and self._worker is not None
                and not self._stop.is_set()
            ):
                self._room.wait(0.5)
        with self.lock.exclusive():
            self._forget(ids)
            self._fresh.add_with_ids(matrix, ids)
            if log_it:
                self._pending.append(_record(b"A", ids, matrix))
                self._logged_adds += len(ids)
        self._start_worker()

    def remove(self, ids: np.ndarray, *, log_it: bool = True) -> None:
        with self.lock.exclusive():
            dropped = self._forget(ids)
            if log_it and len(dropped):
                self._pending.append(_record(b"D", dropped, None))
        if self._rebuild_due():
            self._start_worker()

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        with self.lock.shared(), _one_thread():
            found: list[tuple[int, float]] = []
            if self._pos:
                params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # not in the stubs
                params.efSearch = max(self.options.ef_search, k)
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
                found.extend(_hits(scores[0], ids[0]))
        return sorted(found, key=lambda hit: hit[1], reverse=True)[:k]

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
        total = self.graph_size
        return total > 0 and self._n_dead > self.options.rebuild_deleted_fraction * total

    def _start_worker(self) -> None:
        with self._room:
            if self._worker is None and not self._stop.is_set():
                self._worker = threading.Thread(
                    target=self._work, name="semcache-hnsw", daemon=True
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
            log.error("HNSW maintenance stopped: %s; vectors wait in the exact segment", exc)
        finally:
            with self._room:
                if self._worker is threading.current_thread():
                    self._worker = None
                self._room.notify_all()

    def _merge_some(self) -> bool:
        """Move one chunk of the fresh segment into the graph; False when it was empty."""
        with self.lock.exclusive():
            count = min(_MERGE_CHUNK, int(self._fresh.ntotal))
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
            graph = _new_graph(self.dim)
            for start in range(0, len(positions), 4096):
                if self._stop.is_set():
                    return
                with self.lock.shared():
                    chunk = self._graph.reconstruct_batch(positions[start : start + 4096])
                graph.add(chunk)
            with self.lock.exclusive():
                # A row deleted (or replaced) during the build is a tombstone in the new graph.
                pairs = zip(ids.tolist(), positions.tolist(), strict=True)
                stale = np.fromiter(
                    (self._pos.get(i, -1) != p for i, p in pairs), dtype=bool, count=len(ids)
                )
                self._set_graph(graph, ids, np.packbits(stale, bitorder="little"))
                self.snapshot_needed = True
            log.info("rebuilt an HNSW graph: %d live vectors, tombstones dropped", len(self._pos))
        finally:
            self._rebuilding = False

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

    # -- persistence ---------------------------------------------------------------------------

    def save(self, snapshot: Path, log_path: Path, *, closing: bool = False) -> int:
        """Append what changed to the log, or write a new snapshot when one is due; returns
        the bytes written."""
        with self.lock.shared():
            due = self.snapshot_needed or self._logged_adds > max(
                self.options.approximate_min_entries,
                self.options.snapshot_log_fraction * self._snapshot_size,
            )
            if due or (closing and self._logged_adds):
                return self._write_snapshot(snapshot, log_path)
            records, self._pending = self._pending, []
        if not records and self.log_ok:
            return 0
        try:
            if not self.log_ok:
                return self._write_log(log_path, records)
            with open(log_path, "ab") as f:
                for record in records:
                    f.write(record)
                f.flush()
                os.fsync(f.fileno())
            return sum(len(r) for r in records)
        except OSError as exc:
            with self.lock.exclusive():
                self._pending[:0] = records
            raise StorageError(f"cannot append to vector log {log_path}: {exc}") from exc

    def _write_log(self, log_path: Path, records: list[bytes]) -> int:
        tmp = log_path.with_name(log_path.name + ".tmp")
        data = _LOG_MAGIC + _LOG_HEADER.pack(self.generation) + b"".join(records)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, log_path)
        self.log_ok = True
        return len(data)

    def _write_snapshot(self, snapshot: Path, log_path: Path) -> int:
        """Under the read lock: searches go on, writers wait for the file."""
        generation = self.generation + 1
        tmp = snapshot.with_name(snapshot.name + ".tmp")
        n = self.graph_size
        fresh_ids = faiss.vector_to_array(self._fresh.id_map).astype(np.int64)
        fresh = faiss.downcast_index(self._fresh.index).reconstruct_n(0, len(fresh_ids))
        head = _SNAP_HEADER.pack(generation, n, len(fresh_ids), self.dim)
        body = b"".join(
            [
                self._labels[:n].tobytes(),
                self._dead[: n // 8 + 1].tobytes(),
                fresh_ids.tobytes(),
                np.ascontiguousarray(fresh, dtype=np.float32).tobytes(),
            ]
        )
        try:
            with open(tmp, "wb") as f:
                f.write(_SNAPSHOT_MAGIC + head + body)
                f.write(struct.pack("<I", zlib.crc32(head + body)))
                faiss.write_index(self._graph, faiss.PyCallbackIOWriter(f.write))  # type: ignore[attr-defined]
                f.flush()
                os.fsync(f.fileno())
                written = f.tell()
            os.replace(tmp, snapshot)
            # A crash here leaves the old log under the new snapshot: its generation differs,
            # so the next start ignores it (the snapshot holds all it said).
            self.generation = generation
            written += self._write_log(log_path, [])
        except (OSError, RuntimeError) as exc:
            raise StorageError(f"cannot save vector index {snapshot}: {exc}") from exc
        self._pending = []
        self._logged_adds = 0
        self._snapshot_size = n + len(fresh_ids)
        self.snapshot_needed = False
        return written


def load_hnsw(snapshot: Path, log_path: Path, dim: int, options: IndexOptions) -> HnswPartition:
    """Read a snapshot and replay its log; raises ``ValueError`` for an unusable snapshot. A
    damaged log record ends the replay (reconcile adds what it lacked from SQL) and makes the
    next save write a new snapshot."""
    with open(snapshot, "rb") as f:
        if f.read(len(_SNAPSHOT_MAGIC)) != _SNAPSHOT_MAGIC:
            raise ValueError("not a semcache HNSW snapshot")
        head = _exactly(f, _SNAP_HEADER.size)
        generation, n, n_fresh, file_dim = _SNAP_HEADER.unpack(head)
        if file_dim != dim:
            raise ValueError(f"vectors of dimension {file_dim}, expected {dim}")
        body = _exactly(f, n * 8 + n // 8 + 1 + n_fresh * (8 + 4 * dim))
        (crc,) = struct.unpack("<I", _exactly(f, 4))
        if zlib.crc32(head + body) != crc:
            raise ValueError("the snapshot's checksum does not match")
        try:
            graph = faiss.read_index(faiss.PyCallbackIOReader(f.read))  # type: ignore[attr-defined]
        except RuntimeError as exc:
            raise ValueError(f"unreadable graph: {exc}") from exc
    if not isinstance(graph, faiss.IndexHNSWFlat) or graph.ntotal != n or graph.d != dim:
        raise ValueError("the graph does not match the snapshot's labels")
    part = HnswPartition(dim, options)
    labels = np.frombuffer(body, dtype=np.int64, count=n).copy()
    dead = np.frombuffer(body, dtype=np.uint8, count=n // 8 + 1, offset=n * 8)
    with part.lock.exclusive():
        part._set_graph(graph, labels, dead)
    offset = n * 8 + n // 8 + 1
    fresh_ids = np.frombuffer(body, dtype=np.int64, count=n_fresh, offset=offset)
    if n_fresh:
        fresh = np.frombuffer(body, dtype=np.float32, offset=offset + n_fresh * 8)
        part.add(fresh_ids.copy(), fresh.reshape(n_fresh, dim), log_it=False, wait=False)
    part.generation = generation
    part._snapshot_size = n + n_fresh
    part.snapshot_needed = False
    _replay(part, log_path)
    return part


def _replay(part: HnswPartition, log_path: Path) -> None:
    try:
        data = log_path.read_bytes()
    except FileNotFoundError:
        return  # started again at the next save (log_ok stays False)
    except OSError as exc:
        raise StorageError(f"cannot read vector log {log_path}: {exc}") from exc
    start = len(_LOG_MAGIC) + _LOG_HEADER.size
    if data[: len(_LOG_MAGIC)] != _LOG_MAGIC or len(data) < start:
        log.warning("vector log %s unreadable; repairing from SQL", log_path)
        part.snapshot_needed = True
        return
    (generation,) = _LOG_HEADER.unpack_from(data, len(_LOG_MAGIC))
    if generation != part.generation:
        return  # older than the snapshot, which holds everything it says
    offset = start
    while offset < len(data):
        try:
            kind, count, crc = _RECORD.unpack_from(data, offset)
        except struct.error:
            kind, count, crc = b"?", 0, 0
        size = count * (8 + 4 * part.dim) if kind == b"A" else count * 8
        payload = data[offset + _RECORD.size : offset + _RECORD.size + size]
        if kind not in (b"A", b"D") or len(payload) != size or zlib.crc32(payload) != crc:
            log.warning(
                "vector log %s damaged at byte %d; the rest is repaired from SQL", log_path, offset
            )
            part.snapshot_needed = True
            return
        ids = np.frombuffer(payload, dtype=np.int64, count=count).copy()
        if kind == b"A":
            matrix = np.frombuffer(payload, dtype=np.float32, offset=count * 8)
            part.add(ids, matrix.reshape(count, part.dim), log_it=False, wait=False)
            part._logged_adds += count
        else:
            part.remove(ids, log_it=False)
        offset += _RECORD.size + size
    part.log_ok = True


def _record(kind: bytes, ids: np.ndarray, matrix: np.ndarray | None) -> bytes:
    payload = np.ascontiguousarray(ids, dtype=np.int64).tobytes()
    if matrix is not None:
        payload += np.ascontiguousarray(matrix, dtype=np.float32).tobytes()
    return _RECORD.pack(kind, len(ids), zlib.crc32(payload)) + payload


def _exactly(f: BinaryIO, size: int) -> bytes:
    data = f.read(size)
    if len(data) != size:
        raise ValueError("the snapshot is truncated")
    return data


def _new_graph(dim: int) -> Any:
    graph = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    return graph


def _grown(array: np.ndarray, needed: int) -> np.ndarray:
    """``array`` with room for ``needed`` items (doubling, so appends stay amortised O(1))."""
    if len(array) >= needed:
        return array
    bigger = np.zeros(max(needed, 2 * len(array)), dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger
