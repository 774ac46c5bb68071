"""FAISS indexes, one per partition: derived data that SQL can always rebuild.

Each partition gets an ``IndexIDMap2`` over an exact inner-product index, keyed by the SQL row id,
so a search returns row ids that SQL then filters by context hash and expiry. Inner product of
L2-normalised vectors is cosine similarity, the one scale semcache uses (docs/ARCHITECTURE.md,
"Similarity scale").

Files live under ``<data_dir>/faiss/<partition_key>.faiss`` and are written atomically (temp file,
then rename), so a crash mid-save leaves the previous file; ``reconcile`` then adds what SQL has
and the file lacks, and drops what the file has and SQL lost.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import faiss
import numpy as np

from ..errors import StorageError

__all__ = ["VectorIndexes"]

log = logging.getLogger(__name__)


class VectorIndexes:
    """A thread-safe set of per-partition FAISS indexes with atomic persistence."""

    def __init__(self, directory: Path, dim: int) -> None:
        self.directory = directory
        self.dim = dim
        self._indexes: dict[str, faiss.IndexIDMap2] = {}
        self._dirty: set[str] = set()
        # One lock for all indexes: FAISS indexes are not safe for a concurrent add and search,
        # and a flat search over a partition takes well under a millisecond at cache sizes.
        self._lock = threading.Lock()

    def _new_index(self) -> faiss.IndexIDMap2:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.faiss"

    def add(self, key: str, row_ids: Sequence[int], vectors: np.ndarray) -> None:
        """Add vectors (an ``(n, dim)`` matrix) under their SQL row ids, in one FAISS call."""
        matrix = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(row_ids), self.dim)
        with self._lock:
            index = self._indexes.get(key)
            if index is None:
                index = self._indexes[key] = self._new_index()
            index.add_with_ids(matrix, np.array(row_ids, dtype=np.int64))
            self._dirty.add(key)

    def remove(self, key: str, row_ids: Iterable[int]) -> None:
        """Remove vectors by row id; unknown ids are ignored."""
        ids = np.fromiter(row_ids, dtype=np.int64)
        if ids.size == 0:
            return
        with self._lock:
            index = self._indexes.get(key)
            if index is None:
                return
            index.remove_ids(ids)  # type: ignore[arg-type]  # the stubs miss the array overload
            self._dirty.add(key)

    def search(self, key: str, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(row id, cosine similarity) of the k nearest vectors, most similar first."""
        with self._lock:
            index = self._indexes.get(key)
            if index is None or index.ntotal == 0:
                return []
            scores, ids = index.search(_as_matrix(vector, self.dim), min(k, index.ntotal))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def size(self, key: str) -> int:
        with self._lock:
            index = self._indexes.get(key)
            return 0 if index is None else int(index.ntotal)

    def save(self) -> int:
        """Write changed indexes to disk atomically; returns how many were written."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            dirty = {
                key: faiss.clone_index(self._indexes[key])
                for key in self._dirty
                if key in self._indexes
            }
            removed = self._dirty - dirty.keys()
            self._dirty.clear()
        for key, index in dirty.items():
            path = self._path(key)
            tmp = path.with_suffix(".faiss.tmp")
            try:
                if index.ntotal == 0:
                    path.unlink(missing_ok=True)
                    continue
                faiss.write_index(index, str(tmp))
                os.replace(tmp, path)
            except (OSError, RuntimeError) as exc:
                with self._lock:
                    self._dirty.add(key)
                raise StorageError(f"cannot save vector index {path}: {exc}") from exc
        for key in removed:
            self._path(key).unlink(missing_ok=True)
        return len(dirty)

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
        report = {
            "loaded": 0,
            "added": 0,
            "removed": 0,
            "rebuilt": 0,
            "dropped_files": 0,
            "verified": 0,
            "repaired": 0,
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob("*.faiss.tmp"):
            stale.unlink(missing_ok=True)
        for path in self.directory.glob("*.faiss"):
            if path.stem not in sql_ids:
                path.unlink(missing_ok=True)
                report["dropped_files"] += 1
        for key, wanted in sql_ids.items():
            index = self._load(key)
            if index is None:
                index = self._new_index()
                report["rebuilt"] += 1
            else:
                report["loaded"] += 1
            have = set(faiss.vector_to_array(index.id_map).tolist()) if index.ntotal else set()
            extra = have - wanted
            if extra:
                index.remove_ids(np.fromiter(extra, dtype=np.int64))  # type: ignore[arg-type]
                report["removed"] += len(extra)
            kept = sorted(have & wanted)
            check_all = verify_all or bool(extra) or bool(wanted - have)
            wrong = _wrong_vectors(index, kept if check_all else _sample(kept), load_vectors)
            if wrong and not check_all:
                wrong = _wrong_vectors(index, kept, load_vectors)
                check_all = True
            report["verified"] += len(kept) if check_all else min(len(kept), _SAMPLE)
            if wrong:
                log.warning(
                    "vector index of partition %s held %d vectors that differ from the stored "
                    "embeddings; replacing them",
                    key,
                    len(wrong),
                )
                index.remove_ids(np.array(wrong, dtype=np.int64))  # type: ignore[arg-type]
                report["repaired"] += len(wrong)
            missing = sorted((wanted - have) | set(wrong))
            for start in range(0, len(missing), 4096):
                chunk = missing[start : start + 4096]
                vectors = load_vectors(chunk)
                ids = [i for i in chunk if i in vectors]
                if ids:
                    matrix = np.vstack([_as_matrix(vectors[i], self.dim) for i in ids])
                    index.add_with_ids(matrix, np.array(ids, dtype=np.int64))
                    report["added"] += len(ids)
            with self._lock:
                self._indexes[key] = index
                if extra or missing:
                    self._dirty.add(key)
        return report

    def _load(self, key: str) -> faiss.IndexIDMap2 | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            # A damaged file is derived data: rebuild it from SQL instead of refusing to start.
            log.warning("vector index %s unreadable (%s); rebuilding from SQL", path, exc)
            return None
        if index.d != self.dim or not isinstance(index, faiss.IndexIDMap2):
            log.warning("vector index %s has the wrong shape; rebuilding from SQL", path)
            return None
        return index


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
    index: faiss.IndexIDMap2,
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
            held = index.reconstruct(row_id)
            if not np.allclose(held, vector, atol=1e-5):
                wrong.append(row_id)
    return wrong


def _as_matrix(vector: np.ndarray, dim: int) -> np.ndarray:
    matrix = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, dim)
    return matrix
