"""A large partition's files: a snapshot (``<key>.ann``) and an append-only log (``<key>.alog``).

The snapshot holds the IVF or HNSW index (FAISS's own format, after a header; the magic bytes
still say HNSW, as the first release wrote them), its labels (position ->
row id), the packed tombstones and the fresh segment, with a CRC over all but the graph (a
damaged graph fails FAISS's read or the reconcile's vector sample). The log starts with the
snapshot's generation and holds CRC-checked add and delete records (``faiss_index.record``)
made since; one of another generation is ignored, since the snapshot written after it holds
all it says. Snapshots are written to a temp file, fsynced and renamed; log records are
appended and fsynced. A save appends; a new snapshot is written when the log's adds pass a
fraction of it (``IndexOptions.snapshot_log_fraction``), after a rebuild or a damaged log,
and at shutdown when the log holds adds, so a clean start has no log to merge.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import faiss
import numpy as np

from ..errors import StorageError
from .approx_index import RECORD, ApproxPartition
from .faiss_index import IndexOptions

__all__ = ["load_approx", "save_approx"]

log = logging.getLogger(__name__)

_SNAPSHOT_MAGIC = b"SCHNSW1\n"
_LOG_MAGIC = b"SCHLOG1\n"
_SNAP_HEADER = struct.Struct("<QQQQ")  # generation, graph positions, fresh vectors, dim
_LOG_HEADER = struct.Struct("<Q")  # generation


def save_approx(part: ApproxPartition, snapshot: Path, log_path: Path, *, closing: bool) -> int:
    """Append what changed to the log, or write a new snapshot when one is due; returns the
    bytes written."""
    with part.mutation:
        due = part.snapshot_needed or part.logged_adds > max(
            part.options.approximate_min_entries,
            part.options.snapshot_log_fraction * part.snapshot_size,
        )
        if due or (closing and part.logged_adds):
            return _write_snapshot(part, snapshot, log_path)
        # Changes wait for ``mutation``, so no record is added between these two lines.
        records, part.pending = part.pending, []
    if not records and part.log_ok:
        return 0
    try:
        if not part.log_ok:
            return _write_log(part, log_path, records)
        with open(log_path, "ab") as f:
            for r in records:
                f.write(r)
            f.flush()
            os.fsync(f.fileno())
        return sum(len(r) for r in records)
    except OSError as exc:
        with part.mutation:
            part.pending[:0] = records
        raise StorageError(f"cannot append to vector log {log_path}: {exc}") from exc


def _write_log(part: ApproxPartition, log_path: Path, records: list[bytes]) -> int:
    tmp = log_path.with_name(log_path.name + ".tmp")
    data = _LOG_MAGIC + _LOG_HEADER.pack(part.generation) + b"".join(records)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, log_path)
    part.log_ok = True
    return len(data)


def _write_snapshot(part: ApproxPartition, snapshot: Path, log_path: Path) -> int:
    """Under ``mutation``: searches go on, changes wait for the file."""
    generation = part.generation + 1
    tmp = snapshot.with_name(snapshot.name + ".tmp")
    graph, labels, dead, fresh_ids, fresh = part.state()
    head = _SNAP_HEADER.pack(generation, len(labels), len(fresh_ids), part.dim)
    body = b"".join([labels.tobytes(), dead.tobytes(), fresh_ids.tobytes(), fresh.tobytes()])
    try:
        with open(tmp, "wb") as f:
            f.write(_SNAPSHOT_MAGIC + head + body)
            f.write(struct.pack("<I", zlib.crc32(head + body)))
            faiss.write_index(graph, faiss.PyCallbackIOWriter(f.write))  # type: ignore[attr-defined]
            f.flush()
            os.fsync(f.fileno())
            written = f.tell()
        os.replace(tmp, snapshot)
        # A crash here leaves the old log under the new snapshot: its generation differs, so
        # the next start ignores it.
        part.generation = generation
        written += _write_log(part, log_path, [])
    except (OSError, RuntimeError) as exc:
        raise StorageError(f"cannot save vector index {snapshot}: {exc}") from exc
    part.pending = []
    part.logged_adds = 0
    part.snapshot_size = len(labels) + len(fresh_ids)
    part.snapshot_needed = False
    return written


def load_approx(snapshot: Path, log_path: Path, dim: int, options: IndexOptions) -> ApproxPartition:
    """Read a snapshot and replay its log; raises ``ValueError`` for an unusable snapshot. A
    damaged log record ends the replay (reconcile adds what it lacked from SQL) and makes the
    next save write a new snapshot."""
    with open(snapshot, "rb") as f:
        if f.read(len(_SNAPSHOT_MAGIC)) != _SNAPSHOT_MAGIC:
            raise ValueError("not a semcache index snapshot")
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
    if (
        not isinstance(graph, faiss.IndexHNSWFlat | faiss.IndexIVFFlat)
        or graph.ntotal != n
        or graph.d != dim
    ):
        raise ValueError("the graph does not match the snapshot's labels")
    part = ApproxPartition(dim, options)
    labels = np.frombuffer(body, dtype=np.int64, count=n).copy()
    dead = np.frombuffer(body, dtype=np.uint8, count=n // 8 + 1, offset=n * 8)
    part.install(graph, labels, dead)
    offset = n * 8 + n // 8 + 1
    if n_fresh:
        fresh_ids = np.frombuffer(body, dtype=np.int64, count=n_fresh, offset=offset).copy()
        fresh = np.frombuffer(body, dtype=np.float32, offset=offset + n_fresh * 8)
        part.add(fresh_ids, fresh.reshape(n_fresh, dim), log_it=False, wait=False)
    part.generation = generation
    part.snapshot_size = n + n_fresh
    part.snapshot_needed = False
    _replay(part, log_path)
    part.resume()
    return part


def _replay(part: ApproxPartition, log_path: Path) -> None:
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
            kind, count, crc = RECORD.unpack_from(data, offset)
        except struct.error:
            kind, count, crc = b"?", 0, 0
        size = count * (8 + 4 * part.dim) if kind == b"A" else count * 8
        payload = data[offset + RECORD.size : offset + RECORD.size + size]
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
            part.logged_adds += count
        else:
            part.remove(ids, log_it=False)
        offset += RECORD.size + size
    part.log_ok = True


def _exactly(f: BinaryIO, size: int) -> bytes:
    data = f.read(size)
    if len(data) != size:
        raise ValueError("the snapshot is truncated")
    return data
