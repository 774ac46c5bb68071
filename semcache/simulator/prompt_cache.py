"""Provider prompt caching, modelled on what OpenAI and Anthropic document.

OpenAI caches on its own: a prompt of at least 1024 tokens is remembered in 128-token steps,
and a later prompt that shares a prefix is billed ``cached_tokens`` for the longest remembered
step. Anthropic caches only where a request puts ``cache_control``: the prefix ending at such a
breakpoint is written (``cache_creation_input_tokens``) if it is long enough, and a later
request reads it (``cache_read_input_tokens``) when a breakpoint of its own, or one of the 20
blocks before a breakpoint, ends on a remembered prefix.

Prefixes are remembered as chained digests (each step hashes the previous digest and the new
tokens), so one lookup per step finds the longest shared prefix. Entries belong to one API key
and model and expire after their TTL; a hit refreshes it, as the providers' caches do.
"""

from __future__ import annotations

import hashlib
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["CacheBlock", "PromptCache", "chain_digests"]

OPENAI_STEP = 128
# How many blocks before a breakpoint Anthropic checks for an earlier cache entry.
ANTHROPIC_LOOKBACK = 20
_MAX_ENTRIES = 50_000


@dataclass(frozen=True)
class CacheBlock:
    """One cacheable unit of an Anthropic prompt (a tool, a system block, a content block).

    ``digest`` covers this block and every block before it. ``ttl_s`` is set where the block
    carries ``cache_control``, i.e. where it is a breakpoint.
    """

    tokens: int
    digest: bytes
    ttl_s: float | None = None


def chain_digests(parts: Sequence[bytes]) -> list[bytes]:
    """Digest i covers ``parts[0..i]``: equal digests mean equal prefixes."""
    h = hashlib.blake2b(digest_size=16)
    out = []
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
        out.append(h.copy().digest())
    return out


class PromptCache:
    """Remembered prompt prefixes, per API key and model, with expiry."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (expires_at, ttl_s); ordered by last use so the stalest go first when full.
        self._entries: OrderedDict[tuple[str, ...], tuple[float, float]] = OrderedDict()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _hit(self, key: tuple[str, ...], now: float) -> bool:
        entry = self._entries.get(key)
        if entry is None:
            return False
        expires_at, ttl_s = entry
        if expires_at <= now:
            del self._entries[key]
            return False
        self._entries[key] = (now + ttl_s, ttl_s)
        self._entries.move_to_end(key)
        return True

    def _put(self, key: tuple[str, ...], now: float, ttl_s: float) -> None:
        self._entries[key] = (now + ttl_s, ttl_s)
        self._entries.move_to_end(key)
        while len(self._entries) > _MAX_ENTRIES:
            self._entries.popitem(last=False)

    def openai_cached_tokens(
        self, api_key: str, model: str, token_ids: Sequence[int], min_tokens: int
    ) -> int:
        """Tokens of ``token_ids`` served from cache; remembers this prompt's prefixes too."""
        first = -(-min_tokens // OPENAI_STEP) * OPENAI_STEP
        bounds = list(range(first, len(token_ids) + 1, OPENAI_STEP))
        if not bounds:
            return 0
        ids = array("q", token_ids)
        parts = [ids[start:end].tobytes() for start, end in zip([0, *bounds], bounds, strict=False)]
        keys = [("openai", api_key, model, d.hex()) for d in chain_digests(parts)]
        now = self._clock()
        with self._lock:
            cached = 0
            for bound, key in zip(bounds, keys, strict=True):
                if self._hit(key, now):
                    cached = bound
            for key in keys:
                self._put(key, now, self._ttl_s)
        return cached

    def anthropic_usage(
        self, api_key: str, model: str, blocks: Sequence[CacheBlock], min_tokens: int
    ) -> tuple[int, int]:
        """``(cache_read, cache_creation)`` tokens for a prompt of ``blocks``."""
        ends: list[int] = []
        total = 0
        for block in blocks:
            total += block.tokens
            ends.append(total)
        keys = [("anthropic", api_key, model, b.digest.hex()) for b in blocks]
        breakpoints = [i for i, b in enumerate(blocks) if b.ttl_s is not None]
        now = self._clock()
        with self._lock:
            read_to = -1
            for bp in breakpoints:
                for j in range(bp, max(-1, bp - ANTHROPIC_LOOKBACK), -1):
                    if j <= read_to:
                        break
                    if ends[j] >= min_tokens and self._hit(keys[j], now):
                        read_to = j
                        break
            written_to = -1
            for bp in breakpoints:
                ttl = blocks[bp].ttl_s
                if bp > read_to and ends[bp] >= min_tokens and ttl is not None:
                    self._put(keys[bp], now, ttl)
                    written_to = bp
        read = ends[read_to] if read_to >= 0 else 0
        created = ends[written_to] - read if written_to >= 0 else 0
        return read, created
