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
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import RateLimited

__all__ = ["KeyLimiter", "ModelQueue", "RateLimits", "TokenBucket", "format_reset"]

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


def _retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


class KeyLimiter:
    """RPM and TPM token buckets per API key, with OpenAI-style response headers."""

    def __init__(
        self, limits: RateLimits | Callable[[str], RateLimits], clock: Clock = time.monotonic
    ) -> None:
        self._limits = limits if callable(limits) else (lambda _key: limits)
        self._clock = clock
        self._buckets: dict[str, tuple[RateLimits, TokenBucket | None, TokenBucket | None]] = {}

    def _get(self, key: str) -> tuple[RateLimits, TokenBucket | None, TokenBucket | None]:
        limits = self._limits(key)
        entry = self._buckets.get(key)
        if entry is None or entry[0] != limits:  # new key, or its tier changed
            requests = TokenBucket(limits.rpm, limits.rpm / 60, self._clock) if limits.rpm else None
            tokens = TokenBucket(limits.tpm, limits.tpm / 60, self._clock) if limits.tpm else None
            entry = (limits, requests, tokens)
            self._buckets[key] = entry
        return entry

    def headers(self, key: str) -> dict[str, str]:
        """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` for the limits ``key`` has."""
        limits, requests, tokens = self._get(key)
        out: dict[str, str] = {}
        for name, limit, bucket in (
            ("requests", limits.rpm, requests),
            ("tokens", limits.tpm, tokens),
        ):
            if bucket is None:
                continue
            out[f"x-ratelimit-limit-{name}"] = str(limit)
            out[f"x-ratelimit-remaining-{name}"] = str(max(0, math.floor(bucket.level)))
            out[f"x-ratelimit-reset-{name}"] = format_reset(bucket.time_until_full())
        return out

    def acquire(self, key: str, tokens: int) -> dict[str, str]:
        """Count one request of ``tokens`` estimated tokens, or raise ``RateLimited`` (429).

        Returns the headers to send with the answer. Both limits are checked before either is
        charged, so a request refused for tokens does not use up a request slot.
        """
        limits, requests, bucket = self._get(key)
        waits: list[tuple[float, str]] = []
        if requests is not None and requests.time_until(1) > 0:
            waits.append((requests.time_until(1), f"requests per minute (RPM): limit {limits.rpm}"))
        if bucket is not None and bucket.time_until(tokens) > 0:
            need = bucket.time_until(tokens)
            what = f"tokens per minute (TPM): limit {limits.tpm}, requested {tokens}"
            waits.append((need, what))
        if waits:
            wait, what = max(waits)
            headers = self.headers(key)
            headers["Retry-After"] = _retry_after(wait if math.isfinite(wait) else 60)
            if math.isfinite(wait):
                message = (
                    f"Rate limit reached for {what}. Please try again in {format_reset(wait)}."
                )
            else:
                message = f"Request too large for {what}."
            raise RateLimited(message, headers=headers)
        if requests is not None:
            requests.try_take(1)
        if bucket is not None:
            bucket.try_take(tokens)
        return self.headers(key)

    def settle(self, key: str, estimated: int, actual: int) -> None:
        """Correct the tokens charged for a finished request to what it used."""
        _, _, bucket = self._get(key)
        if bucket is not None:
            bucket.settle(estimated, actual)


class ModelQueue:
    """A tokens-per-minute budget for one upstream model; callers queue for it, first come first.

    ``acquire`` returns once the caller's tokens are taken, or raises ``RateLimited`` when they
    were not available within ``max_wait_s``. One pump task serves the queue: it wakes when the
    head's tokens will have refilled, when a deadline passes, or when ``wake()`` is called (on
    arrivals, settlements, and by tests that drive an injected clock).
    """

    def __init__(self, model: str, tpm: int, clock: Clock = time.monotonic) -> None:
        self.model = model
        self.tpm = tpm
        self._clock = clock
        self._bucket = TokenBucket(tpm, tpm / 60, clock)
        self._waiters: deque[tuple[int, float, asyncio.Future[None]]] = deque()
        self._wakeup = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def wake(self) -> None:
        self._wakeup.set()

    def _refusal(self, tokens: int, ahead: int) -> RateLimited:
        wait = (ahead + tokens - self._bucket.level) / self._bucket.refill_per_s
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
        if not self._waiters and self._bucket.try_take(tokens):
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

    def settle(self, estimated: int, actual: int) -> None:
        """Correct a finished call's tokens; a refund may let the next caller in."""
        self._bucket.settle(estimated, actual)
        self.wake()

    async def _serve(self) -> None:
        while self._waiters:
            self._wakeup.clear()
            now = self._clock()
            # Expire those past their deadline, wherever they are in the queue.
            ahead = 0
            for entry in list(self._waiters):
                tokens, deadline, future = entry
                if future.done():
                    self._waiters.remove(entry)
                elif now >= deadline:
                    self._waiters.remove(entry)
                    future.set_exception(self._refusal(tokens, ahead))
                else:
                    ahead += tokens
            # Admit from the head while the bucket holds enough.
            while self._waiters and self._bucket.try_take(self._waiters[0][0]):
                self._waiters.popleft()[2].set_result(None)
            if not self._waiters:
                break
            head_wait = self._bucket.time_until(self._waiters[0][0])
            next_deadline = min(d for _, d, _ in self._waiters) - now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wakeup.wait(), timeout=max(0.0, min(head_wait, next_deadline))
                )
