"""When and how long to wait before retrying an upstream call."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "parse_retry_after"]

# 529 is Anthropic's "overloaded"; the rest are the usual transient statuses.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 529})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, honouring Retry-After up to a cap."""

    max_retries: int = 2
    base_s: float = 0.5
    max_s: float = 8.0
    retry_after_max_s: float = 30.0

    def delay(
        self, attempt: int, retry_after: float | None, rng: random.Random | None = None
    ) -> float | None:
        """Seconds before retry number ``attempt`` (0-based), or None to give up now.

        Full jitter (uniform in [0, min(max, base * 2^attempt)]) spreads the retries of many
        clients; a Retry-After the upstream sent is a floor, since retrying sooner only earns
        another 429. A Retry-After over the cap means the upstream is out for longer than a
        client will wait, so the call fails at once instead.
        """
        if attempt >= self.max_retries:
            return None
        if retry_after is not None and retry_after > self.retry_after_max_s:
            return None
        ceiling = min(self.max_s, self.base_s * (2**attempt))
        jittered = (rng or random).uniform(0.0, ceiling)
        return max(jittered, retry_after or 0.0)
