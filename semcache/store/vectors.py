"""FAISS indexes, one per partition: derived data that SQL can always rebuild.

Each partition's index is keyed by the SQL row id, so a search returns row ids that SQL then
filters by context hash and expiry. Inner product of L2-normalised vectors is cosine
similarity, the one scale semcache uses (docs/ARCHITECTURE.md, "Similarity scale"). A partition
below ``approximate_min_entries`` is exact (``FlatPartition``, ``<key>.faiss``); past it, an IVF
(or HNSW) index with tombstones, a snapshot and an append-only log (``ApproxPartition``,
``<key>.ann`` and ``<key>.alog``; see ``faiss_index`` and ``approx_files``). One that shrinks
below half the threshold turns exact again.

Every file is written atomically (temp file, then rename) or appended with CRC-checked
records, so a crash mid-save leaves a readable state; ``reconcile`` then adds what SQL has and
the files lack, and drops what the files have and SQL lost. Only the process that owns the
files (``index_dir_lock``) writes or deletes them; the indexes of any other (``writable``
False) live in memory only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import faiss
import numpy as np

from .approx_files import load_approx, save_approx
from .approx_index import ApproxPartition
from .faiss_index import FlatPartition, IndexOptions

__all__ = ["INDEX_SUFFIXES", "IndexOptions", "VectorIndexes"]

log = logging.getLogger(__name__)

Partition = FlatPartition | ApproxPartition

# An exact index, an approximate one's snapshot and log, and the names releases before IVF gave
# those two (``.hnsw``, ``.hlog``: renamed when found).
INDEX_SUFFIXES = (".faiss", ".ann", ".alog", ".hnsw", ".hlog")
_LEGACY = {".ann": ".hnsw", ".alog": ".hlog"}


class VectorIndexes:
    """A thread-safe set of per-partition FAISS indexes with atomic persistence."""

    def __init__(
        self,
        directory: Path,
        dim: int,
        options: IndexOptions | None = None,
        *,
        writable: bool = True,
    ) -> None:
        self.directory = directory
        self.dim = dim
        self.options = options or IndexOptions()
        # False: another process owns the files; load them, never change them.
        self.writable = writable
        self._indexes: dict[str, Partition] = {}
        # Guards the dict only; each partition has its own reader-writer lock, so searches run
        # side by side and a large partition's maintenance never blocks another's.
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()

    def _paths(self, key: str) -> tuple[Path, Path, Path]:
        d = self.directory
        return d / f"{key}.faiss", d / f"{key}.ann", d / f"{key}.alog"

    def _get(self, key: str) -> Partition | None:
        with self._lock:
            return self._indexes.get(key)

    def add(
        self, key: str, row_ids: Sequence[int], vectors: np.ndarray, *, wait: bool = True
    ) -> None:
        """Add vectors (an ``(n, dim)`` matrix) under their SQL row ids. A large partition's
        add waits while its exact segment is full, unless ``wait`` is False (at start, where
        serving soon matters more than exact scans of what is not merged yet)."""
        matrix = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(row_ids), self.dim)
        ids = np.array(row_ids, dtype=np.int64)
        with self._lock:
            part = self._indexes.get(key)
            if part is None:
                part = self._indexes[key] = FlatPartition(self.dim)
        if isinstance(part, ApproxPartition):
            # Log records (each added vector) only for a process that writes the files: in
            # any other nothing would ever write them (``take_ownership`` writes snapshots).
            part.add(ids, matrix, wait=wait, log_it=self.writable)
        else:
            part.add(ids, matrix)
        if part.kind == "flat" and part.size >= self.options.approximate_min_entries:
            self._convert(key, part)

    def _convert(self, key: str, part: Partition) -> Partition:
        """The other kind of index for the same vectors (the caller holds the write path)."""
        ids, matrix = part.export()
        new: Partition
        if part.kind == "flat":
            new = ApproxPartition(self.dim, self.options)
            log.info("partition %s reached %d entries: approximate index", key, len(ids))
        else:
            new = FlatPartition(self.dim)
            new.dirty = True
            log.info("partition %s down to %d entries: exact index", key, len(ids))
        if isinstance(new, ApproxPartition):
            new.add(ids, matrix, wait=False, log_it=self.writable)
        elif len(ids):
            new.add(ids, matrix)
        with self._lock:
            self._indexes[key] = new
        if isinstance(part, ApproxPartition):
            part.stop()
        return new

    def remove(self, key: str, row_ids: Iterable[int]) -> int:
        """Remove vectors by row id; unknown ids are ignored. Returns how many were removed."""
        ids = np.fromiter(row_ids, dtype=np.int64)
        part = self._get(key)
        if not ids.size or part is None:
            return 0
        if isinstance(part, ApproxPartition):
            removed = part.remove(ids, log_it=self.writable)
        else:
            removed = part.remove(ids)
        # Here, not in save: writers are serialised by the store, so no add can land in the
        # object being replaced.
        if part.size == 0:
            self._drop(key, part)
        elif part.kind != "flat" and part.size < self.options.approximate_min_entries // 2:
            self._convert(key, part)
        return removed

    def search(self, key: str, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(row id, cosine similarity) of the k nearest vectors, most similar first."""
        part = self._get(key)
        if part is None:
            return []
        return part.search(_as_matrix(vector, self.dim), k)

    def size(self, key: str) -> int:
        part = self._get(key)
        return 0 if part is None else part.size

    def kind(self, key: str) -> str | None:
        """``flat``, ``ivf``, ``hnsw`` or None (no vectors): for tests, benchmarks and metrics."""
        part = self._get(key)
        return None if part is None else part.kind

    def partition(self, key: str) -> Partition | None:
        return self._get(key)

    def save(self, *, closing: bool = False) -> int:
        """Write what changed (whole small files, log records of large ones, a snapshot when
        due); returns the bytes written. Nothing without the files' ownership."""
        written = 0
        with self._save_lock:
            # Checked under the lock: ``give_up_files`` may have run while this waited.
            if not self.writable:
                return 0
            self.directory.mkdir(parents=True, exist_ok=True)
            with self._lock:
                parts = dict(self._indexes)
            for key, part in parts.items():
                flat, snapshot, log_path = self._paths(key)
                if isinstance(part, FlatPartition):
                    if part.save(flat):
                        written += flat.stat().st_size
                        snapshot.unlink(missing_ok=True)
                        log_path.unlink(missing_ok=True)
                else:
                    wrote = save_approx(part, snapshot, log_path, closing=closing)
                    if wrote:
                        flat.unlink(missing_ok=True)
                    written += wrote
        return written

    def give_up_files(self) -> None:
        """Stop writing the files (before their lock is released): a save still waiting for
        the save lock then writes nothing, so a new owner is never written over."""
        with self._save_lock:
            self.writable = False

    def take_ownership(self) -> None:
        """Become the files' writer (their owner closed): the files hold the old owner's
        state, not this process's, so the next save writes every partition whole."""
        with self._save_lock:
            with self._lock:
                parts = dict(self._indexes)
            for key, part in parts.items():
                if isinstance(part, FlatPartition):
                    with part.lock.exclusive():
                        part.dirty = True
                    continue
                # The old owner's log may replay onto a snapshot of the same generation.
                self._paths(key)[2].unlink(missing_ok=True)
                with part.mutation:
                    part.snapshot_needed, part.log_ok, part.pending = True, False, []
            self.writable = True

    def _drop(self, key: str, part: Partition) -> None:
        with self._lock:
            if self._indexes.get(key) is part:
                del self._indexes[key]
        if isinstance(part, ApproxPartition):
            part.stop()
        if self.writable:
            for path in self._paths(key):
                path.unlink(missing_ok=True)

    def wait_idle(self, timeout: float = 600.0) -> bool:
        """Wait for every large partition's background merge or rebuild to finish."""
        with self._lock:
            parts = list(self._indexes.values())
        return all(p.wait_idle(timeout) for p in parts if isinstance(p, ApproxPartition))

    def close(self) -> None:
        """Stop background work, then save (a snapshot of any large partition with logged
        adds, so the next start has nothing to merge)."""
        with self._lock:
            parts = list(self._indexes.values())
        for part in parts:
            if isinstance(part, ApproxPartition):
                part.stop()
        self.save(closing=True)

    def reconcile(
        self,
        sql_ids: Mapping[str, set[int]],
        load_vectors: Callable[[list[int]], dict[int, np.ndarray]],
        *,
        verify_all: bool = False,
    ) -> dict[str, int]:
        """Load saved indexes and make them agree with SQL, which is the truth.

        ``sql_ids`` maps partition key to the row ids SQL holds; ``load_vectors`` reads stored
        embeddings for row ids (never re-embedding). Ids alone can agree while vectors do not
        (a file saved before its ids were reused, a file overwritten by another store's), so
        the vectors of a sample of ids are compared with the stored ones too, and all of them
        when the ids disagreed, the sample found a difference, or ``verify_all`` says so.
        Returns counts of what was done.
        """
        report = dict.fromkeys(
            ("loaded", "added", "removed", "rebuilt", "dropped_files", "verified", "repaired"), 0
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.writable:
            # Files of partitions SQL no longer has, and temp files of an interrupted save;
            # a process that does not own the files leaves them (the owner may be saving).
            for stale in self.directory.glob("*.tmp"):
                stale.unlink(missing_ok=True)
            for suffix in INDEX_SUFFIXES:
                for path in self.directory.glob(f"*{suffix}"):
                    if path.stem not in sql_ids:
                        path.unlink(missing_ok=True)
                        report["dropped_files"] += suffix not in (".alog", ".hlog")
        for key, wanted in sql_ids.items():
            part = self._load(key)
            if part is None:
                part = FlatPartition(self.dim)
                report["rebuilt"] += 1
            else:
                report["loaded"] += 1
            have = set(part.live_ids().tolist())
            extra = have - wanted
            if extra:
                part.remove(np.fromiter(extra, dtype=np.int64))
                report["removed"] += len(extra)
            kept = sorted(have & wanted)
            check_all = verify_all or bool(extra) or bool(wanted - have)
            wrong = _wrong_vectors(part, kept if check_all else _sample(kept), load_vectors)
            if wrong and not check_all:
                wrong = _wrong_vectors(part, kept, load_vectors)
                check_all = True
            report["verified"] += len(kept) if check_all else min(len(kept), _SAMPLE)
            if wrong:
                log.warning(
                    "vector index of partition %s held %d vectors that differ from the stored "
                    "embeddings; replacing them",
                    key,
                    len(wrong),
                )
                part.remove(np.array(wrong, dtype=np.int64))
                report["repaired"] += len(wrong)
            missing = sorted((wanted - have) | set(wrong))
            with self._lock:
                self._indexes[key] = part
            for start in range(0, len(missing), 4096):
                chunk = missing[start : start + 4096]
                vectors = load_vectors(chunk)
                ids = [i for i in chunk if i in vectors]
                if ids:
                    matrix = np.vstack([_as_matrix(vectors[i], self.dim) for i in ids])
                    self.add(key, ids, matrix, wait=False)
                    report["added"] += len(ids)
            part = self._get(key) or part  # add may have made it approximate
            if extra and isinstance(part, FlatPartition):
                part.dirty = True
            large = part.size >= self.options.approximate_min_entries
            if isinstance(part, FlatPartition) and large:
                self._convert(key, part)
        return report

    def _load(self, key: str) -> Partition | None:
        flat, snapshot, log_path = self._paths(key)
        for path in (snapshot, log_path):
            legacy = path.with_suffix(_LEGACY[path.suffix])
            if legacy.exists() and not path.exists():
                if not self.writable:
                    return None  # the owner renames them; this process rebuilds from SQL
                legacy.rename(path)
        has_flat, has_snapshot = flat.exists(), snapshot.exists()
        if has_flat and has_snapshot:
            # A crash between writing one kind and deleting the other (or, seen by a process
            # that does not own the files, the owner mid-switch): the newer is the state.
            older = flat if flat.stat().st_mtime < snapshot.stat().st_mtime else snapshot
            has_flat, has_snapshot = older is snapshot, older is flat
            if self.writable:
                older.unlink()
                if older is snapshot:
                    log_path.unlink(missing_ok=True)
        if has_snapshot:
            try:
                return load_approx(snapshot, log_path, self.dim, self.options)
            except (ValueError, OSError) as exc:
                log.warning("vector index %s unreadable (%s); rebuilding from SQL", snapshot, exc)
                return None
        if not has_flat:
            return None
        try:
            index = faiss.read_index(str(flat))
        except RuntimeError as exc:
            # A damaged file is derived data: rebuild it from SQL instead of refusing to start.
            log.warning("vector index %s unreadable (%s); rebuilding from SQL", flat, exc)
            return None
        if index.d != self.dim or not isinstance(index, faiss.IndexIDMap2):
            log.warning("vector index %s has the wrong shape; rebuilding from SQL", flat)
            return None
        return FlatPartition(self.dim, index)


# Vectors compared per partition on every start when the ids agree: the highest ids (where a
# reused id would sit) and an even spread over the rest.
_SAMPLE = 64


def _sample(ids: list[int]) -> list[int]:
    if len(ids) <= _SAMPLE:
        return ids
    top = ids[-_SAMPLE // 2 :]
    rest = ids[: -_SAMPLE // 2]
    step = len(rest) / (_SAMPLE // 2)
    return [rest[int(i * step)] for i in range(_SAMPLE // 2)] + top


def _wrong_vectors(
    part: Partition,
    ids: list[int],
    load_vectors: Callable[[list[int]], dict[int, np.ndarray]],
) -> list[int]:
    """The ids among ``ids`` whose vector in the index differs from the stored embedding."""
    wrong: list[int] = []
    for start in range(0, len(ids), 4096):
        chunk = ids[start : start + 4096]
        stored = load_vectors(chunk)
        for row_id in chunk:
            vector = stored.get(row_id)
            if vector is None:
                continue
            if not np.allclose(part.vector(row_id), vector, atol=1e-5):
                wrong.append(row_id)
    return wrong


def _as_matrix(vector: np.ndarray, dim: int) -> np.ndarray:
    return np.ascontiguousarray(vector, dtype=np.float32).reshape(1, dim)
