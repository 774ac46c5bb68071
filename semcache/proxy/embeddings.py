"""``POST /v1/embeddings``: each input item cached on its own, the rest sent upstream at once.

A batch whose items are partly cached sends only the others upstream, in one request, and
answers every item in the client's order at its own index. Entries are exact only (a vector
answers its own text, never a rewording); each is stored after the answer went out. The
request is priced and attributed in up to two rows: the cached items as a hit (their saving),
the items sent as a miss (what the upstream billed).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import numpy as np

from ..cache.keys import RequestKeys, embedding_keys
from ..cache.results import LookupResult
from ..cache.status import CacheStatus
from ..errors import StorageError
from ..store.base import Partition
from ..wire.base import OPENAI
from ..wire.embeddings import (
    EMBEDDINGS_PATH,
    EMBEDDINGS_SCOPE,
    EmbeddingsRequest,
    Item,
    Vector,
    embeddings_response,
    parse_embeddings_request,
    read_upstream_vectors,
)
from .call import ProxyCall, ProxyResponse
from .miss import MissEnvironment, upstream_headers

__all__ = ["EmbeddingsProxy"]

log = logging.getLogger(__name__)

# How many of the request's items were answered from the cache, as "cached/total".
CACHED_ITEMS_HEADER = "X-Semcache-Cached-Items"


@dataclass(frozen=True)
class _Known:
    """An item's vector and the prompt tokens it costs, from the cache or this call."""

    vector: Vector
    tokens: int


class EmbeddingsProxy:
    """Answers embeddings requests item by item from the cache, the rest from the upstream."""

    def __init__(self, env: MissEnvironment) -> None:
        self.env = env
        # Embedding entries are never searched by similarity; they all carry this one vector
        # (the index needs one), so storing them costs no encoder call.
        self._placeholder: np.ndarray | None = None
        # Items answered by the upstream whose store has not finished, by exact key: a
        # repeat arriving meanwhile is served from here as the hit it is about to be.
        self._storing: dict[str, _Known] = {}

    async def handle(self, call: ProxyCall) -> ProxyResponse:
        request = parse_embeddings_request(call.body)
        cache, policy = self.env.cache, self.env.policy
        if call.controls.ttl_s is not None:
            cache.resolve_ttl(call.controls.ttl_s)  # a bad TTL is a 400 before upstream
        counted = [self._count(request.model, item) for item in request.items]
        admission = await policy.admit_tokens(call.caller, call.body, sum(counted))
        call = replace(call, admission=admission)
        partition = call.partition_in(EMBEDDINGS_SCOPE)
        keys = [embedding_keys(partition, item, request.dimensions) for item in request.items]
        known = {} if call.controls.no_cache else await self._lookup(call, partition, keys)
        cached = sum(k.exact_key in known for k in keys)
        missing: dict[str, tuple[RequestKeys, Item, int]] = {}
        for key, item, tokens in zip(keys, request.items, counted, strict=True):
            if key.exact_key not in known:
                missing.setdefault(key.exact_key, (key, item, tokens))

        headers = {CACHED_ITEMS_HEADER: f"{cached}/{len(keys)}"}
        sent = list(missing.values())
        answer: dict[str, Any] | None = None
        if sent:
            answer, fetched = await self._fetch(call, request, sent, headers)
            known.update(fetched)
            if not call.controls.no_store:
                new = [(key, fetched[key.exact_key]) for key, _, _ in sent]
                self._storing.update((key.exact_key, item) for key, item in new)
                self.env.background.spawn(self._store(call, partition, new))
        status = CacheStatus.HIT_EXACT
        if sent:
            status = CacheStatus.REFRESH if call.controls.no_cache else CacheStatus.MISS
        headers["X-Semcache-Status"] = str(status)

        vectors = [known[k.exact_key].vector for k in keys]
        total = sum(known[k.exact_key].tokens for k in keys)
        upstream_tokens = sum(known[key.exact_key].tokens for key, _, _ in sent)
        headers.update(self._account(call, request.model, total - upstream_tokens, answer))
        headers.update(admission.headers)
        headers.setdefault("x-request-id", f"req_semcache_{secrets.token_hex(12)}")
        body = embeddings_response(request.model, vectors, request.encoding_format, total)
        return ProxyResponse(headers, body=body)

    def _count(self, model: str, item: Item) -> int:
        if isinstance(item, list):
            return len(item)
        return self.env.policy.counter.count_text_tokens(model, item)

    async def _lookup(
        self, call: ProxyCall, partition: Partition, keys: list[RequestKeys]
    ) -> dict[str, _Known]:
        known = {
            k.exact_key: self._storing[k.exact_key] for k in keys if k.exact_key in self._storing
        }
        unique = list({k.exact_key: k for k in keys if k.exact_key not in known}.values())
        results = await asyncio.gather(
            *(self.env.cache.lookup(partition, {}, semantic=False, keys=k) for k in unique)
        )
        max_age = call.controls.max_age_s
        now = self.env.cache.clock()
        for key, result in zip(unique, results, strict=True):
            stored = _stored(result)
            if stored is None or result.entry is None:
                continue
            if max_age is not None and now - result.entry.created_at > max_age:
                continue
            known[key.exact_key] = stored
        return known

    async def _fetch(
        self,
        call: ProxyCall,
        request: EmbeddingsRequest,
        sent: list[tuple[RequestKeys, Item, int]],
        headers: dict[str, str],
    ) -> tuple[dict[str, Any], dict[str, _Known]]:
        """Send the missing items upstream in one request; their vectors and token counts."""
        assert call.admission is not None
        await self.env.policy.before_upstream(call.caller, call.admission, request.model)
        body = {**call.body, "input": [item for _, item, _ in sent]}
        reply = await self.env.upstream.send(
            OPENAI,
            EMBEDDINGS_PATH,
            body,
            stream=False,
            client_key=call.client_key,
            client_headers=call.client_headers,
        )
        answer = reply.json()
        vectors = read_upstream_vectors(answer, len(sent))
        headers.update(upstream_headers(reply.headers))
        headers["X-Semcache-Model"] = request.model
        usage = answer.get("usage")
        billed = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        counted = [tokens for _, _, tokens in sent]
        shares = _split(billed, counted) if isinstance(billed, int) and billed >= 0 else counted
        fetched = {
            key.exact_key: _Known(vector, tokens)
            for (key, _, _), vector, tokens in zip(sent, vectors, shares, strict=True)
        }
        return answer, fetched

    def _account(
        self, call: ProxyCall, model: str, cached_tokens: int, answer: dict[str, Any] | None
    ) -> dict[str, str]:
        """Cost and attribution: one row for the cached items, one for those sent upstream."""
        assert call.admission is not None
        policy, admission = self.env.policy, call.admission
        headers: dict[str, str] = {}
        if answer is None or cached_tokens:
            # With an upstream call too, that call settles the key's quota; this row must not.
            hit = admission if answer is None else replace(admission, estimated_tokens=0, queued={})
            hit_usage = {"usage": {"prompt_tokens": cached_tokens}}
            headers.update(
                policy.account(
                    call.caller,
                    hit,
                    OPENAI,
                    status=CacheStatus.HIT_EXACT,
                    model=model,
                    answer=hit_usage,
                    from_upstream=False,
                )
            )
        if answer is not None:
            status = CacheStatus.REFRESH if call.controls.no_cache else CacheStatus.MISS
            # Its cost header replaces the hit row's $0; the hit row's saving stays.
            headers.update(
                policy.account(
                    call.caller,
                    admission,
                    OPENAI,
                    status=status,
                    model=model,
                    answer=answer,
                    from_upstream=True,
                )
            )
        return headers

    async def _store(
        self, call: ProxyCall, partition: Partition, new: list[tuple[RequestKeys, _Known]]
    ) -> None:
        cache = self.env.cache
        try:
            if self._placeholder is None:
                self._placeholder = await cache.batcher.embed("embedding")
            for keys, known in new:
                try:
                    await cache.store(
                        partition,
                        {},
                        {"embedding": known.vector, "tokens": known.tokens},
                        ttl_s=call.controls.ttl_s,
                        keys=keys,
                        vector=self._placeholder,
                        metadata={"kind": "embedding"},
                    )
                except StorageError as exc:
                    cache.metrics.store_failures.inc()
                    log.warning("could not store an embedding: %s", exc.message)
        finally:
            for keys, known in new:  # stored now, or never will be: the store answers next
                if self._storing.get(keys.exact_key) is known:
                    del self._storing[keys.exact_key]


def _stored(result: LookupResult) -> _Known | None:
    """The vector and tokens of an entry found, or None if it is not an embedding entry."""
    response = result.entry.response if result.entry is not None else None
    if not isinstance(response, dict):
        return None
    vector, tokens = response.get("embedding"), response.get("tokens")
    if not isinstance(vector, list | str) or not isinstance(tokens, int):
        return None
    return _Known(vector, tokens)


def _split(total: int, weights: list[int]) -> list[int]:
    """``total`` shared out in proportion to ``weights`` (largest remainders), summing to it."""
    weight = sum(weights)
    if weight <= 0:
        weights, weight = [1] * len(weights), len(weights)
    exact = [Decimal(total) * w / weight for w in weights]
    shares = [int(e) for e in exact]
    order = sorted(range(len(weights)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares
