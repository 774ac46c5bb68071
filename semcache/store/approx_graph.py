"""The approximate index of a large partition ("graph" in ``approx_index``): which kind, its
size, how it is made. See ``approx_index``'s docstring for the measurements behind the kinds."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

from .faiss_index import IndexOptions

__all__ = [
    "fill_graph",
    "graph_kind",
    "ivf_lists",
    "ivf_training_size",
    "new_graph",
    "release_freed_memory",
    "reserve_lists",
    "untrained",
]

# Measured (benchmarks/scale.py, 384-d near-duplicates): M=32 reaches recall@1 >= 0.99 at a
# small efSearch up to 300k; efConstruction 40 builds about twice as fast as 80.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
# k-means training points per IVF list (FAISS warns below 39) and iterations: what keeps a
# retrain at a million entries to tens of seconds on 2 cores.
_IVF_TRAIN_PER_LIST = 40
_IVF_TRAIN_ITERATIONS = 10


def graph_kind(graph: Any) -> str:
    return "ivf" if isinstance(graph, faiss.IndexIVF) else "hnsw"


def ivf_lists(n: int) -> int:
    """IVF lists for n vectors: 4 sqrt(n), the usual rule (4,000 at a million), but no more
    than n vectors can train."""
    return max(1, min(int(4 * n**0.5), n // _IVF_TRAIN_PER_LIST))


def ivf_training_size(n: int) -> int:
    return min(n, _IVF_TRAIN_PER_LIST * ivf_lists(n))


def new_graph(dim: int, options: IndexOptions, sample: np.ndarray | None, size: int) -> Any:
    """An empty graph of the kind ``options`` names; an IVF one has ``ivf_lists(size)`` lists,
    trained on ``sample``."""
    if options.kind == "hnsw" or sample is None:
        graph = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return graph
    graph = _ivf(dim, ivf_lists(size))
    graph.cp.niter = _IVF_TRAIN_ITERATIONS
    graph.cp.max_points_per_centroid = _IVF_TRAIN_PER_LIST
    graph.train(np.ascontiguousarray(sample, dtype=np.float32))
    return graph


def _ivf(dim: int, nlist: int) -> Any:
    # index_factory's object owns its quantizer, and is already an IndexIVFFlat (a
    # downcast_index copy would not own it, and the C++ index would go with this one).
    graph: Any = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    # Positions are added in order, so the direct map is an array: reconstruct (rebuilds,
    # exports, reconcile's check) reads a vector by position.
    graph.set_direct_map_type(faiss.DirectMap.Array)  # type: ignore[attr-defined]  # not in the stubs
    return graph


def untrained(dim: int, options: IndexOptions) -> Any:
    """The graph a new partition starts with: an IVF one is trained on its first merge."""
    return new_graph(dim, options, None, 0) if options.kind == "hnsw" else _ivf(dim, 1)


def reserve_lists(graph: Any, sizes: np.ndarray) -> None:
    """Allocate each (empty) IVF list once, for what it will be filled with plus room to grow:
    a vector resized up from empty is allocated exactly and keeps that room when resized back
    down. The room differs per list (10% to 60%), so lists fill up at different times: room
    equal for all would have every list reallocated (copied) within the same few merges."""
    invlists = faiss.downcast_InvertedLists(graph.invlists)
    spread = (np.arange(len(sizes)) * 0.618034) % 1.0  # evenly spread, not random: repeatable
    room = (sizes * (1.1 + 0.5 * spread)).astype(np.int64) + 16
    for number, (size, capacity) in enumerate(zip(sizes.tolist(), room.tolist(), strict=True)):
        if size:
            invlists.resize(number, capacity)
            invlists.resize(number, 0)


def release_freed_memory() -> None:
    """Hand heap pages freed by a replaced index back to the OS. glibc keeps freed memory for
    reuse, so after a rebuild at a million entries the process would stay gigabytes above what
    it holds; elsewhere (no ``malloc_trim``) this does nothing."""
    name = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    if trim is not None:
        trim(0)


def fill_graph(
    graph: Any,
    positions: np.ndarray,
    read: Callable[[np.ndarray], np.ndarray],
    stopped: Callable[[], bool],
) -> bool:
    """Add to ``graph``, in order, the vectors ``read`` returns for ``positions`` (of the graph
    being replaced), 4,096 at a time; False if ``stopped()`` turned true on the way. An IVF graph
    gets its list assignments first, so each list is allocated once at its size (lists grown by
    appends hold up to twice what they store)."""
    chunks = range(0, len(positions), 4096)
    assign = None
    if isinstance(graph, faiss.IndexIVF):
        assign = np.empty(len(positions), dtype=np.int64)
        for start in chunks:
            if stopped():
                return False
            chunk = read(positions[start : start + 4096])
            assign[start : start + len(chunk)] = graph.quantizer.search(chunk, 1)[1][:, 0]
        reserve_lists(graph, np.bincount(assign, minlength=graph.nlist))
    for start in chunks:
        if stopped():
            return False
        chunk = read(positions[start : start + 4096])
        if assign is None:
            graph.add(chunk)
        else:
            where = np.ascontiguousarray(assign[start : start + len(chunk)])
            graph.add_core(len(chunk), faiss.swig_ptr(chunk), None, faiss.swig_ptr(where))
    return True
