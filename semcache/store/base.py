"""The narrow storage interface the cache service talks to, and the values it passes.

One ``CacheStore`` holds entries (SQL, the truth) and their vectors. ``SqlFaissStore`` keeps the
vectors in a FAISS index per partition (derived data, one process); ``PostgresStore`` keeps them
in a pgvector column of the same rows (shared by replicas); ``factory.open_store`` picks one by
URL, and the service does not notice which. Methods are synchronous: the service runs them in
worker threads so the event loop never blocks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import xxhash

from .attribution import AttributionStore

__all__ = [
    "HIT_FLOOR_MARGIN",
    "CacheStore",
    "Candidate",
    "Entry",
    "NewEntry",
    "Partition",
    "TenantStats",
    "entry_from_row",
    "filtered_reason",
    "last_per_key",
    "partition_key",
]


@dataclass(frozen=True)
class Partition:
    """Where an entry lives: (tenant, namespace, model, doc_version). Nothing crosses it."""

    tenant: str
    namespace: str = ""
    model: str = ""
    doc_version: str = ""

    def as_list(self) -> list[str]:
        return [self.tenant, self.namespace, self.model, self.doc_version]

    @property
    def key(self) -> str:
        """A stable hex name for the partition, used for index files and SQL lookups."""
        return partition_key(self.as_list())


# The same text embedded twice can differ in the last digits (the micro-batcher pads it with
# whatever else is in the batch), so a query must beat an entry's hit floor by this much.
HIT_FLOOR_MARGIN = 1e-3


def filtered_reason(
    nearest: Sequence[Candidate], *, context_hash: str, now: float, threshold: float
) -> str | None:
    """Why ``search`` left out a near entry: the cause of the most similar of ``nearest`` (the
    partition's neighbours before the context, expiry and hit-floor filters) at or above
    ``threshold`` that a search would not return (``context-differs``, ``expired``,
    ``hit-floor``); None when no entry that near was filtered out."""
    for c in sorted(nearest, key=lambda c: c.similarity, reverse=True):
        if c.similarity < threshold:
            return None
        if c.entry.context_hash != context_hash:
            return "context-differs"
        if c.entry.expires_at <= now:
            return "expired"
        if c.entry.hit_floor is not None and c.similarity <= c.entry.hit_floor + HIT_FLOOR_MARGIN:
            return "hit-floor"
    return None


def partition_key(fields: list[str]) -> str:
    """A stable hex name for partition fields: index file names and SQL lookups use it."""
    return xxhash.xxh3_64_hexdigest(json.dumps(fields, separators=(",", ":")).encode())


@dataclass(frozen=True)
class NewEntry:
    """What the service hands the store to write."""

    entry_id: str
    partition: Partition
    exact_key: str
    context_hash: str
    query: str
    response: Any
    embedding: np.ndarray
    created_at: float
    expires_at: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def columns(self) -> dict[str, Any]:
        """The entries row's columns but the embedding, whose form each backend chooses."""
        p = self.partition
        return {
            "entry_id": self.entry_id,
            "tenant": p.tenant,
            "namespace": p.namespace,
            "model": p.model,
            "doc_version": p.doc_version,
            "partition_key": p.key,
            "exact_key": self.exact_key,
            "context_hash": self.context_hash,
            "query": self.query,
            "response": json.dumps(self.response, ensure_ascii=False),
            "metadata": json.dumps(self.metadata, ensure_ascii=False),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "last_used_at": self.created_at,
            "hit_count": 0,
        }

    def stored(self, row_id: int) -> Entry:
        """This entry as a store returns it once written under ``row_id``."""
        return Entry(
            entry_id=self.entry_id,
            row_id=row_id,
            partition=self.partition,
            exact_key=self.exact_key,
            context_hash=self.context_hash,
            query=self.query,
            response=self.response,
            metadata=dict(self.metadata),
            created_at=self.created_at,
            expires_at=self.expires_at,
            last_used_at=self.created_at,
            hit_count=0,
        )


def last_per_key(batch: Sequence[NewEntry]) -> tuple[list[NewEntry], list[int]]:
    """What ``put_many`` writes of ``batch``: each (tenant, exact key) once, its last entry (what
    putting them in turn would leave), in batch order; and for each entry of the batch the
    position, in that list, of the one written for its key."""
    last: dict[tuple[str, str], int] = {}
    for n, entry in enumerate(batch):
        last[(entry.partition.tenant, entry.exact_key)] = n
    kept = sorted(last.values())
    slot = {n: i for i, n in enumerate(kept)}
    return [batch[n] for n in kept], [slot[last[(e.partition.tenant, e.exact_key)]] for e in batch]


@dataclass(frozen=True)
class Entry:
    """A stored entry as read back from SQL."""

    entry_id: str
    row_id: int
    partition: Partition
    exact_key: str
    context_hash: str
    query: str
    response: Any
    metadata: dict[str, Any]
    created_at: float
    expires_at: float
    last_used_at: float
    hit_count: int
    # Only queries more similar than this hit the entry semantically (a wrong-hit report).
    hit_floor: float | None = None


def entry_from_row(row: Any) -> Entry:
    """An ``entries`` row (a mapping of ``schema.ENTRY_COLUMNS``) read back as an ``Entry``."""
    return Entry(
        entry_id=row["entry_id"],
        row_id=int(row["row_id"]),
        partition=Partition(row["tenant"], row["namespace"], row["model"], row["doc_version"]),
        exact_key=row["exact_key"],
        context_hash=row["context_hash"],
        query=row["query"],
        response=json.loads(row["response"]),
        metadata=json.loads(row["metadata"]),
        created_at=float(row["created_at"]),
        expires_at=float(row["expires_at"]),
        last_used_at=float(row["last_used_at"]),
        hit_count=int(row["hit_count"]),
        hit_floor=None if row["hit_floor"] is None else float(row["hit_floor"]),
    )


@dataclass(frozen=True)
class Candidate:
    """A semantic neighbour that passed the context and expiry filters."""

    entry: Entry
    similarity: float


@dataclass(frozen=True)
class TenantStats:
    """What one tenant holds."""

    entries: int
    partitions: int
    hits: int


class CacheStore(Protocol):
    """Everything the cache service needs from storage, and nothing more."""

    def put(self, entry: NewEntry, *, max_entries: int) -> tuple[Entry, int]:
        """Write an entry (replacing one with the same exact key); evict the tenant's least
        recently used entries past ``max_entries``. Returns the entry and how many were evicted."""
        ...

    def put_many(self, batch: Sequence[NewEntry], *, max_entries: int) -> tuple[list[Entry], int]:
        """Write a batch in one transaction, all of it or (raising) none: what ``put`` of each
        in turn would leave, an exact key repeated in the batch stored once with its last
        entry (``last_per_key``); then evict past ``max_entries``. Returns, for each entry of
        the batch in order, the entry now stored for its key, and how many were evicted."""
        ...

    def get(self, tenant: str, entry_id: str) -> Entry | None:
        """The tenant's entry with this public id, expired or not."""
        ...

    def get_exact(self, tenant: str, exact_key: str, now: float) -> Entry | None:
        """The live entry with this exact key."""
        ...

    def search(
        self,
        partition: Partition,
        vector: np.ndarray,
        *,
        context_hash: str,
        now: float,
        k: int,
        min_similarity: float = -1.0,
        limit: int | None = None,
    ) -> list[Candidate]:
        """Live entries of the partition with this context hash that the query may hit (more
        similar than the entry's ``hit_floor`` by over ``HIT_FLOOR_MARGIN``), most similar
        first, among its ``k`` nearest; only the first ``limit`` of them when given (what the
        caller's hit decision reads; the store may then fetch fewer rows). A store that widens
        its search past entries of other contexts stops once what it would add is less
        similar than ``min_similarity`` (the caller's cosine floor: such entries could not
        hit)."""
        ...

    def explain_miss(
        self,
        partition: Partition,
        vector: np.ndarray,
        *,
        context_hash: str,
        now: float,
        threshold: float,
        k: int,
    ) -> str | None:
        """Why ``search`` returned no candidate at or above ``threshold`` (``filtered_reason``
        of the partition's ``k`` nearest entries, unfiltered); None when nothing that near was
        left out. Called only after a miss, so a hit never pays for it."""
        ...

    def record_wrong_hit(
        self, tenant: str, entry_id: str, vector: np.ndarray
    ) -> tuple[Entry, float] | None:
        """Raise the entry's ``hit_floor`` to the similarity of ``vector`` (a query it wrongly
        answered) unless it is higher already. Returns the updated entry and that similarity;
        None when the tenant has no such entry."""
        ...

    def record_hits(self, hits: Mapping[int, tuple[int, float]]) -> None:
        """Add hit counts and last-used times, ``{row_id: (hits, last_hit_at)}``, in one write."""
        ...

    def delete(self, tenant: str, entry_id: str) -> bool:
        """Delete one entry; False when the tenant has no such entry."""
        ...

    def invalidate(
        self,
        tenant: str,
        *,
        namespace: str | None = None,
        model: str | None = None,
        doc_version: str | None = None,
    ) -> int:
        """Delete the tenant's entries matching every given field; returns how many."""
        ...

    def sweep_expired(self, now: float) -> int:
        """Delete expired entries and their vectors; returns how many."""
        ...

    def tenant_stats(self, tenant: str) -> TenantStats:
        """Counts for one tenant."""
        ...

    def count_entries(self) -> int:
        """Entries held across all tenants."""
        ...

    def check(self) -> None:
        """Raise ``StorageError`` if the store cannot serve."""
        ...

    def attribution(self) -> AttributionStore:
        """The attribution rows kept beside the entries (one per proxied request)."""
        ...

    def flush(self) -> None:
        """Persist derived data (vector indexes) so a restart need not rebuild it."""
        ...

    def catch_up(self) -> int:
        """Index the entries other processes stored since the last call (derived data kept
        beside SQL); returns how many. The server calls it every second."""
        ...

    def close(self) -> None:
        """Flush and release connections."""
        ...
