"""Rate limits: requests and tokens per minute per API key, and a token budget per model.

Token limits are charged with the *estimated* prompt plus requested output before a call and
settled with the provider's usage after it, so a request is never blocked on tokens it has not
spent yet but the bucket still ends up charged what was used. Keys answer with OpenAI's
``x-ratelimit-*`` headers; an upstream model's budget queues requests (first come, first
served, each waiting for its own token count) for up to a configured time instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..errors import RateLimited

__all__ = [
    "BucketSpec",
    "Buckets",
    "KeyLimiter",
    "MemoryBuckets",
    "ModelQueue",
    "RateLimits",
    "TokenBucket",
    "format_reset",
]

Clock = Callable[[], float]


def format_reset(seconds: float) -> str:
    """A duration as OpenAI writes ``x-ratelimit-reset-*``: "120ms", "6s", "1m0s", "1h2m3s"."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".")
    if hours >= 1:
        return f"{int(hours)}h{int(minutes)}m{text}s"
    if minutes >= 1:
        return f"{int(minutes)}m{text}s"
    return f"{text}s"


class TokenBucket:
    """A bucket of ``capacity`` that refills continuously; it may go negative when settled."""

    def __init__(self, capacity: float, refill_per_s: float, clock: Clock = time.monotonic) -> None:
        if capacity <= 0 or refill_per_s <= 0:
            raise ValueError("capacity and refill_per_s must be positive")
        self.capacity = float(capacity)
        self.refill_per_s = float(refill_per_s)
        self._clock = clock
        self._level = float(capacity)
        self._at = clock()

    @classmethod
    def snapshot(
        cls, capacity: float, refill_per_s: float, level: float, now: float
    ) -> TokenBucket:
        """A bucket frozen at ``level`` at time ``now`` (a shared bucket's row, read at the
        database's clock): for reading its level and waits, not for taking."""
        bucket = cls(capacity, refill_per_s, clock=lambda: now)
        bucket._level = level
        return bucket

    def _refill(self) -> None:
        now = self._clock()
        if now > self._at:
            self._level = min(self.capacity, self._level + (now - self._at) * self.refill_per_s)
        self._at = now

    @property
    def level(self) -> float:
        """What is in the bucket now (negative while paying off an underestimate)."""
        self._refill()
        return self._level

    def try_take(self, n: float) -> bool:
        """Take ``n`` if the bucket holds that much now."""
        self._refill()
        if self._level >= n:
            self._level -= n
            return True
        return False

    def settle(self, estimated: float, actual: float) -> None:
        """Correct a take of ``estimated`` to ``actual``: refund the rest or charge the extra."""
        self._refill()
        self._level = min(self.capacity, self._level + estimated - actual)

    def time_until(self, n: float) -> float:
        """Seconds until ``n`` can be taken; 0 now, infinity if ``n`` exceeds the capacity."""
        if n > self.capacity:
            return math.inf
        self._refill()
        return max(0.0, (n - self._level) / self.refill_per_s)

    def time_until_full(self) -> float:
        self._refill()
        return max(0.0, (self.capacity - self._level) / self.refill_per_s)


@dataclass(frozen=True)
class RateLimits:
    """Requests and tokens per minute for one key; None means unlimited."""

    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True)
class BucketSpec:
    """A named bucket: what it holds when full and how fast it refills."""

    name: str
    capacity: float
    refill_per_s: float

    @classmethod
    def per_minute(cls, name: str, limit: int) -> BucketSpec:
        return cls(name, float(limit), limit / 60)


class Buckets(Protocol):
    """Where bucket levels live: this process (``MemoryBuckets``) or the shared store, so
    that a limit holds for every replica together (``semcache.store.counters``)."""

    async def take(
        self, wants: Sequence[tuple[BucketSpec, float]]
    ) -> tuple[bool, list[TokenBucket]]:
        """All or nothing: take each ``n`` if every bucket holds its ``n`` now. Returns
        whether they were taken and each bucket as it stands afterwards."""
        ...

    async def settle(self, spec: BucketSpec, estimated: float, actual: float) -> None: ...

    async def peek(self, specs: Sequence[BucketSpec]) -> list[TokenBucket]: ...


class MemoryBuckets:
    """Buckets in this process; a bucket whose spec changed (a key's new tier) starts full."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[BucketSpec, TokenBucket]] = {}

    def _get(self, spec: BucketSpec) -> TokenBucket:
        found = self._buckets.get(spec.name)
        if found is None or found[0] != spec:
            found = (spec, TokenBucket(spec.capacity, spec.refill_per_s, self._clock))
            self._buckets[spec.name] = found
        return found[1]

    # No await inside: on the event loop each call is atomic, which keeps a queue's head
    # and a key's two buckets consistent without a lock.
    async def take(
        self, wants: Sequence[tuple[BucketSpec, float]]
    ) -> tuple[bool, list[TokenBucket]]:
        buckets = [self._get(spec) for spec, _ in wants]
        if any(b.time_until(n) > 0 for b, (_, n) in zip(buckets, wants, strict=True)):
            return False, buckets
        for bucket, (_, n) in zip(buckets, wants, strict=True):
            bucket.try_take(n)
        return True, buckets

    async def settle(self, spec: BucketSpec, estimated: float, actual: float) -> None:
        self._get(spec).settle(estimated, actual)

    async def peek(self, specs: Sequence[BucketSpec]) -> list[TokenBucket]:
        return [self._get(spec) for spec in specs]


def _retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


class KeyLimiter:
    """RPM and TPM token buckets per API key, with OpenAI-style response headers."""

    def __init__(
        self,
        limits: RateLimits | Callable[[str], RateLimits],
        clock: Clock = time.monotonic,
        buckets: Buckets | None = None,
    ) -> None:
        self._limits = limits if callable(limits) else (lambda _key: limits)
        self.buckets: Buckets = buckets if buckets is not None else MemoryBuckets(clock)

    def _specs(self, key: str) -> list[tuple[str, int, BucketSpec]]:
        limits = self._limits(key)
        out = []
        for name, limit in (("requests", limits.rpm), ("tokens", limits.tpm)):
            if limit:
                out.append((name, limit, BucketSpec.per_minute(f"key:{name}:{key}", limit)))
        return out

    @staticmethod
    def _render(
        specs: list[tuple[str, int, BucketSpec]], buckets: list[TokenBucket]
    ) -> dict[str, str]:
        out: dict[str, str] = {}
        for (name, limit, _), bucket in zip(specs, buckets, strict=True):
            out[f"x-ratelimit-limit-{name}"] = str(limit)
            out[f"x-ratelimit-remaining-{name}"] = str(max(0, math.floor(bucket.level)))
            out[f"x-ratelimit-reset-{name}"] = format_reset(bucket.time_until_full())
        return out

    async def headers(self, key: str) -> dict[str, str]:
        """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` for the limits ``key`` has."""
        specs = self._specs(key)
        return self._render(specs, await self.buckets.peek([s for _, _, s in specs]))

    async def acquire(self, key: str, tokens: int) -> dict[str, str]:
        """Count one request of ``tokens`` estimated tokens, or raise ``RateLimited`` (429).

        Returns the headers to send with the answer. Both limits are checked before either is
        charged, so a request refused for tokens does not use up a request slot.
        """
        specs = self._specs(key)
        if not specs:
            return {}
        wants = [(spec, 1 if name == "requests" else tokens) for name, _, spec in specs]
        too_large = any(n > spec.capacity for spec, n in wants)
        taken, buckets = await self.buckets.take(wants)
        if taken and not too_large:
            return self._render(specs, buckets)
        waits: list[tuple[float, str]] = []
        for (name, limit, _), bucket, (_, n) in zip(specs, buckets, wants, strict=True):
            wait = bucket.time_until(n)
            if wait > 0:
                what = (
                    f"requests per minute (RPM): limit {limit}"
                    if name == "requests"
                    else f"tokens per minute (TPM): limit {limit}, requested {tokens}"
                )
                waits.append((wait, what))
        wait, what = max(waits)
        headers = self._render(specs, buckets)
        headers["Retry-After"] = _retry_after(wait if math.isfinite(wait) else 60)
        if math.isfinite(wait):
            message = f"Rate limit reached for {what}. Please try again in {format_reset(wait)}."
        else:
            message = f"Request too large for {what}."
        raise RateLimited(message, headers=headers)

    def limits_tokens(self, key: str) -> bool:
        """Whether ``key`` has a TPM limit (something for ``settle`` to correct)."""
        return bool(self._limits(key).tpm)

    async def settle(self, key: str, estimated: int, actual: int) -> None:
        """Correct the tokens charged for a finished request to what it used."""
        for name, _, spec in self._specs(key):
            if name == "tokens":
                await self.buckets.settle(spec, estimated, actual)


class ModelQueue:
    """A tokens-per-minute budget for one upstream model; callers queue for it, first come first.

    ``acquire`` returns once the caller's tokens are taken, or raises ``RateLimited`` when they
    were not available within ``max_wait_s``. One pump task serves the queue: it wakes when the
    head's tokens will have refilled, when a deadline passes, or when ``wake()`` is called (on
    arrivals, settlements, and by tests that drive an injected clock). With shared buckets the
    budget holds for every replica together; the order is first come first served within a
    replica, and replicas' queues take from the budget as their heads fit.
    """

    def __init__(
        self,
        model: str,
        tpm: int,
        clock: Clock = time.monotonic,
        buckets: Buckets | None = None,
        recheck_s: float | None = None,
    ) -> None:
        self.model = model
        # Shared buckets are refunded by other replicas' settlements, which do not wake this
        # queue: it looks again this often instead of sleeping until its own refill estimate.
        self._recheck_s = recheck_s
        self.tpm = tpm
        self._clock = clock
        self._spec = BucketSpec.per_minute(f"model:{model}", tpm)
        self._buckets: Buckets = buckets if buckets is not None else MemoryBuckets(clock)
        self._waiters: deque[tuple[int, float, asyncio.Future[None]]] = deque()
        self._wakeup = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def wake(self) -> None:
        self._wakeup.set()

    def _refusal(self, tokens: int, ahead: int, bucket: TokenBucket) -> RateLimited:
        wait = (ahead + tokens - bucket.level) / bucket.refill_per_s
        return RateLimited(
            f"Upstream model {self.model} is at its token budget ({self.tpm} TPM); "
            f"no capacity for {tokens} tokens in time.",
            headers={"Retry-After": _retry_after(wait)},
        )

    async def acquire(self, tokens: int, max_wait_s: float) -> None:
        """Wait behind earlier callers until ``tokens`` fit the budget, at most ``max_wait_s``."""
        if tokens > self.tpm:
            raise RateLimited(
                f"Request of {tokens} tokens exceeds model {self.model}'s budget "
                f"of {self.tpm} TPM.",
                headers={"Retry-After": "60"},
            )
        if not self._waiters and (await self._buckets.take([(self._spec, tokens)]))[0]:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (tokens, self._clock() + max_wait_s, future)
        self._waiters.append(entry)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._serve())
        self.wake()
        try:
            await future
        except asyncio.CancelledError:
            # The client went away: leave the queue so nobody behind waits for it.
            if entry in self._waiters:
                self._waiters.remove(entry)
                self.wake()
            raise

    async def settle(self, estimated: int, actual: int) -> None:
        """Correct a finished call's tokens; a refund may let the next caller in."""
        await self._buckets.settle(self._spec, estimated, actual)
        self.wake()

    async def _serve(self) -> None:
        while self._waiters:
            self._wakeup.clear()
            (bucket,) = await self._buckets.peek([self._spec])
            now = self._clock()
            # Expire those past their deadline, wherever they are in the queue.
            ahead = 0
            for entry in list(self._waiters):
                tokens, deadline, future = entry
                if future.done():
                    self._waiters.remove(entry)
                elif now >= deadline:
                    self._waiters.remove(entry)
                    future.set_exception(self._refusal(tokens, ahead, bucket))
                else:
                    ahead += tokens
            # Admit from the head while the budget holds enough.
            while self._waiters:
                head = self._waiters[0]
                taken, (bucket,) = await self._buckets.take([(self._spec, head[0])])
                if not taken:
                    break
                if head in self._waiters and not head[2].done():
                    self._waiters.remove(head)
                    head[2].set_result(None)
                else:  # it left (cancelled) while a shared take was in flight: refund
                    await self._buckets.settle(self._spec, head[0], 0)
            if not self._waiters:
                break
            head_wait = bucket.time_until(self._waiters[0][0])
            next_deadline = min(d for _, d, _ in self._waiters) - now
            sleep = min(head_wait, next_deadline, self._recheck_s or math.inf)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=max(0.0, sleep))
