"""Entries for store tests that need no model: random unit vectors and numbered entries."""

from __future__ import annotations

import numpy as np

from semcache.store import NewEntry, Partition

__all__ = ["PARTITION", "numbered_entry", "unit_vector"]

PARTITION = Partition("acme", "support", "gpt-4o", "v1")


def unit_vector(seed: int, dim: int) -> np.ndarray:
    """A random unit vector of ``dim`` floats, the same for the same seed."""
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def numbered_entry(n: int, dim: int, *, expires_at: float, created_at: float = 1000.0) -> NewEntry:
    """Entry ``e{n}`` of ``PARTITION``: key ``k{n}``, context ``ctx``, vector ``unit_vector(n)``."""
    return NewEntry(
        entry_id=f"e{n}",
        partition=PARTITION,
        exact_key=f"k{n}",
        context_hash="ctx",
        query=f"query {n}",
        response={"n": n},
        embedding=unit_vector(n, dim),
        created_at=created_at,
        expires_at=expires_at,
    )
