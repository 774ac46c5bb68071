"""A search candidate built by hand, for testing hit decisions without a store."""

from __future__ import annotations

from semcache.cache import Partition
from semcache.store.base import Candidate, Entry

PARTITION = Partition("t", "ns", "gpt-4o", "")


def candidate(query: str, similarity: float, row: int = 1, response: str = "r") -> Candidate:
    """A live entry for ``query`` in ``PARTITION``, found at cosine ``similarity``."""
    entry = Entry(
        entry_id=f"e{row}",
        row_id=row,
        partition=PARTITION,
        exact_key=f"k{row}",
        context_hash="c",
        query=query,
        response=response,
        metadata={},
        created_at=0.0,
        expires_at=1e12,
        last_used_at=0.0,
        hit_count=0,
    )
    return Candidate(entry, similarity)
