"""The cache service: exact layer, semantic layer, store, expiry and eviction.

Everything here is ``async`` and pushes blocking work (SQL, FAISS, the hit decision) to worker
threads; the semantic layer's embed, search and decision are ``semantic.SemanticLayer``'s. The
HTTP layer and the proxy both call it.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..embed.batcher import MicroBatcher
from ..errors import InvalidRequest, NotFound
from ..metrics import CacheMetrics
from ..store.base import CacheStore, Entry, NewEntry, Partition, TenantStats
from ..telemetry import Tracing
from .decision import HitDecision, ThresholdDecision
from .keys import RequestKeys, normalize_query, request_keys
from .results import CacheConfig, LookupResult, PreparedStore, StoreItem
from .semantic import SemanticLayer
from .status import CacheStatus, MissReason
from .workers import StoreWorkers

__all__ = [
    "HIT_EXACT",
    "HIT_SEMANTIC",
    "MISS",
    "WRONG_HIT_IS_OWN_QUESTION",
    "CacheService",
    "CacheStatus",
]

log = logging.getLogger(__name__)

# Short names for the statuses a lookup answers with.
HIT_EXACT = CacheStatus.HIT_EXACT
HIT_SEMANTIC = CacheStatus.HIT_SEMANTIC
MISS = CacheStatus.MISS
# The error code of a wrong-hit report naming the entry's own question (delete it instead).
WRONG_HIT_IS_OWN_QUESTION = "wrong_hit_is_own_question"


class CacheService:
    """Lookup and store over one ``CacheStore``, shared by the cache-aside API and the proxy."""

    def __init__(
        self,
        config: CacheConfig,
        store: CacheStore,
        batcher: MicroBatcher,
        *,
        decision: HitDecision | None = None,
        metrics: CacheMetrics | None = None,
        clock: Callable[[], float] = time.time,
        workers: StoreWorkers | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.config = config
        # Spans around the lookup's steps (docs/ARCHITECTURE.md, "Traces").
        self.tracing = tracing or Tracing.off()
        self.storage = store
        self.batcher = batcher
        self.decision: HitDecision = decision or ThresholdDecision()
        self.metrics = metrics or CacheMetrics()
        self.clock = clock
        self.workers = workers or StoreWorkers()
        self.semantic = SemanticLayer(
            config,
            store,
            batcher,
            self.decision,
            workers=self.workers,
            metrics=self.metrics,
            tracing=self.tracing,
        )
        self._lookups: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._pending_hits: dict[int, tuple[int, float]] = {}

    # -- validation shared by every caller -------------------------------------------------------

    def resolve_threshold(self, requested: float | None) -> float:
        """The threshold a lookup uses: the default, or an allowed per-request override."""
        if requested is None:
            return self.config.threshold
        if not -1.0 <= requested <= 1.0:
            raise InvalidRequest(
                f"threshold must be a cosine similarity in [-1, 1], got {requested}",
                code="invalid_threshold",
            )
        if requested < self.config.min_request_threshold:
            raise InvalidRequest(
                f"threshold {requested} is below this server's minimum of "
                f"{self.config.min_request_threshold}; ask for a higher one",
                code="invalid_threshold",
            )
        return requested

    def resolve_ttl(self, requested: float | None) -> float:
        """Seconds an entry lives: the default, or an allowed per-request TTL."""
        if requested is None:
            return float(self.config.default_ttl_s)
        if requested <= 0:
            raise InvalidRequest(
                f"ttl_s must be a positive number of seconds, got {requested}", code="invalid_ttl"
            )
        if requested > self.config.max_ttl_s:
            raise InvalidRequest(
                f"ttl_s {requested} is over this server's maximum of {self.config.max_ttl_s}",
                code="invalid_ttl",
            )
        return float(requested)

    def embeddable(self, text: str) -> bool:
        """Whether the semantic layer takes this text (``check_query`` says why not)."""
        return len(text) <= self.config.max_query_chars

    def check_query(self, text: str) -> None:
        """Reject a query the semantic layer cannot use."""
        if not text.strip():
            raise InvalidRequest("query must not be empty", code="empty_query")
        if len(text) > self.config.max_query_chars:
            raise InvalidRequest(
                f"query is {len(text)} characters; the limit is {self.config.max_query_chars}",
                code="query_too_long",
            )

    # -- lookup and store ------------------------------------------------------------------------

    async def lookup(
        self,
        partition: Partition,
        request: Mapping[str, Any],
        *,
        threshold: float | None = None,
        semantic: bool = True,
        stale_window_s: float = 0.0,
        keys: RequestKeys | None = None,
    ) -> LookupResult:
        """Exact layer, then (if allowed) the semantic layer; records the outcome.

        ``stale_window_s`` also accepts entries that expired at most that long ago
        (stale-if-error, when the upstream is down). ``keys`` are the request's keys when the
        caller computed them already.
        """
        started = time.perf_counter()
        use_threshold = self.resolve_threshold(threshold)
        keys = keys or request_keys(partition, request)
        now = self.clock()
        result = await self._lookup(partition, keys, use_threshold, now - stale_window_s, semantic)
        if result.entry is not None:
            self._count_hit(result.entry.row_id, now)
        self._lookups[partition.tenant][result.status] += 1
        self.metrics.lookups.labels(result.status).inc()
        self.metrics.lookup_seconds.labels(result.status).observe(time.perf_counter() - started)
        return result

    async def recheck_exact(self, partition: Partition, keys: RequestKeys) -> LookupResult | None:
        """The exact layer alone, for a caller whose lookup missed and who has reason to think
        the entry was stored since (proxy: a flight landed in between). A hit is counted on
        the entry; the lookup counters keep the miss the first probe recorded."""
        now = self.clock()
        entry = await self._probe_exact(partition, keys, now)
        if entry is None:
            return None
        self._count_hit(entry.row_id, now)
        return LookupResult(HIT_EXACT, entry, 1.0, keys)

    def _count_hit(self, row_id: int, now: float) -> None:
        # Hits are counted in memory and written in batches (flush_hits): a write per hit
        # would put an fsync on every exact hit, tens of milliseconds.
        count, _ = self._pending_hits.get(row_id, (0, now))
        self._pending_hits[row_id] = (count + 1, now)

    async def _probe_exact(
        self, partition: Partition, keys: RequestKeys, now: float
    ) -> Entry | None:
        with self.tracing.span("semcache.exact_lookup") as span:
            exact = await self.workers.read(
                self.storage.get_exact, partition.tenant, keys.exact_key, now
            )
            span.set_attribute("semcache.found", exact is not None)
        return exact

    async def _lookup(
        self, partition: Partition, keys: RequestKeys, threshold: float, now: float, semantic: bool
    ) -> LookupResult:
        exact = await self._probe_exact(partition, keys, now)
        if exact is not None:
            return LookupResult(HIT_EXACT, exact, 1.0, keys)
        if not semantic or not keys.semantic_text.strip():
            return LookupResult(MISS, keys=keys, miss_reason=MissReason.NO_CANDIDATE)
        return await self.semantic.lookup(partition, keys, threshold, now)

    def prepare_store(self, item: StoreItem, keys: RequestKeys | None = None) -> PreparedStore:
        """The item's keys and TTL, checked as ``store`` checks them (``InvalidRequest``)."""
        ttl = self.resolve_ttl(item.ttl_s)
        keys = keys or request_keys(item.partition, item.request)
        if keys.semantic_text:
            self.check_query(keys.semantic_text)
        return PreparedStore(item, keys, ttl)

    async def store(
        self,
        partition: Partition,
        request: Mapping[str, Any],
        response: Any,
        *,
        ttl_s: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        keys: RequestKeys | None = None,
        vector: np.ndarray | None = None,
    ) -> Entry:
        """Embed and write one entry; evict the tenant's least recently used past its limit."""
        prepared = self.prepare_store(
            StoreItem(partition, request, response, ttl_s, metadata), keys
        )
        with self.tracing.span("semcache.store") as span:
            if vector is None:
                vector = await self.batcher.embed(prepared.keys.semantic_text or " ")
            new = self._new_entry(prepared, vector, self.clock())
            entry, evicted = await self.workers.write(
                self.storage.put, new, max_entries=self.config.max_entries_per_tenant
            )
            span.set_attribute("semcache.entry_id", entry.entry_id)
        self._stored(1, evicted)
        return entry

    async def store_many(self, batch: Sequence[PreparedStore]) -> list[Entry]:
        """Write a batch (each item from ``prepare_store``) all or nothing: the texts embedded
        in shared encoder batches, the rows in one transaction (``CacheStore.put_many``: a
        request repeated in the batch keeps its last answer). One entry per item, in order."""
        if not batch:
            return []
        with self.tracing.span("semcache.store", {"semcache.entries": len(batch)}) as span:
            vectors = await self.batcher.embed_many([p.keys.semantic_text or " " for p in batch])
            now = self.clock()
            new = [self._new_entry(p, v, now) for p, v in zip(batch, vectors, strict=True)]
            entries, evicted = await self.workers.write(
                self.storage.put_many, new, max_entries=self.config.max_entries_per_tenant
            )
            if len(entries) == 1:
                span.set_attribute("semcache.entry_id", entries[0].entry_id)
        self._stored(len(new), evicted)
        return entries

    def _new_entry(self, prepared: PreparedStore, vector: np.ndarray, now: float) -> NewEntry:
        item, keys = prepared.item, prepared.keys
        return NewEntry(
            entry_id=secrets.token_hex(16),
            partition=item.partition,
            exact_key=keys.exact_key,
            context_hash=keys.context_hash,
            query=keys.semantic_text,
            response=item.response,
            embedding=vector,
            created_at=now,
            expires_at=now + prepared.ttl_s,
            metadata=dict(item.metadata or {}),
        )

    def _stored(self, stores: int, evicted: int) -> None:
        self.metrics.stores.inc(stores)
        if evicted:
            self.metrics.evictions.labels("lru").inc(evicted)

    # -- management ------------------------------------------------------------------------------

    async def get(self, tenant: str, entry_id: str) -> Entry:
        entry = await self.workers.read(self.storage.get, tenant, entry_id)
        if entry is None:
            raise NotFound(f"no cache entry with id {entry_id!r}", code="entry_not_found")
        return entry

    async def report_wrong_hit(self, tenant: str, entry_id: str, query: str) -> tuple[Entry, float]:
        """Record that the entry's answer was wrong for ``query``: from now on only queries more
        similar to the entry than ``query`` can hit it semantically (exact repeats of the
        entry's own request still do). Returns the entry and the query's similarity to it.

        A per-entry threshold learned from feedback, the idea of vCache (learning from the
        traffic): one bad neighbour stops being served without lowering the hit rate
        of every other entry.
        """
        self.check_query(query)
        entry = await self.get(tenant, entry_id)
        if normalize_query(query) == normalize_query(entry.query):
            raise InvalidRequest(
                "the query is the entry's own question, so its answer is wrong for every "
                f"query: delete the entry instead (DELETE /v1/cache/entries/{entry_id})",
                code=WRONG_HIT_IS_OWN_QUESTION,
            )
        vector = await self.batcher.embed(query)
        recorded = await self.workers.write(self.storage.record_wrong_hit, tenant, entry_id, vector)
        if recorded is None:  # deleted between the two calls
            raise NotFound(f"no cache entry with id {entry_id!r}", code="entry_not_found")
        self.metrics.wrong_hits.inc()
        return recorded

    async def delete(self, tenant: str, entry_id: str) -> None:
        if not await self.workers.write(self.storage.delete, tenant, entry_id):
            raise NotFound(f"no cache entry with id {entry_id!r}", code="entry_not_found")

    async def invalidate(
        self,
        tenant: str,
        *,
        namespace: str | None = None,
        model: str | None = None,
        doc_version: str | None = None,
    ) -> int:
        return await self.workers.write(
            self.storage.invalidate,
            tenant,
            namespace=namespace,
            model=model,
            doc_version=doc_version,
        )

    async def stats(self, tenant: str) -> dict[str, Any]:
        await self.flush_hits()
        held: TenantStats = await self.workers.read(self.storage.tenant_stats, tenant)
        lookups = self._lookups[tenant]
        total = sum(lookups.values())
        hits = lookups[HIT_EXACT] + lookups[HIT_SEMANTIC]
        return {
            "entries": held.entries,
            "partitions": held.partitions,
            "entry_hits": held.hits,
            "lookups": {
                "total": total,
                "hit_exact": lookups[HIT_EXACT],
                "hit_semantic": lookups[HIT_SEMANTIC],
                "miss": lookups[MISS],
                "hit_rate": (hits / total) if total else None,
            },
            "threshold": self.config.threshold,
            "max_entries": self.config.max_entries_per_tenant,
        }

    async def flush_hits(self) -> int:
        """Write the hit counts and last-used times gathered since the last flush."""
        pending, self._pending_hits = self._pending_hits, {}
        if pending:
            try:
                await self.workers.write(self.storage.record_hits, pending)
            except BaseException:
                # Keep the counts for the next flush rather than lose them.
                for row_id, (count, at) in pending.items():
                    now_count, now_at = self._pending_hits.get(row_id, (0, at))
                    self._pending_hits[row_id] = (count + now_count, max(at, now_at))
                raise
        return len(pending)

    def close(self) -> None:
        """Let the store calls in flight finish and stop the worker threads."""
        self.workers.close()

    async def stop_batching(self) -> None:
        """Stop the hit decision's micro-batcher task (the encoder's is the caller's)."""
        await self.semantic.close()

    async def sweep(self) -> int:
        """Delete expired entries now; returns how many."""
        cutoff = self.clock() - self.config.stale_retention_s
        removed = await self.workers.write(self.storage.sweep_expired, cutoff)
        if removed:
            self.metrics.evictions.labels("expired").inc(removed)
        return removed
