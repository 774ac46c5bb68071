"""Everything a running simulator remembers, in one object hung on ``app.state``.

Handlers run on one event loop, but tests and embedding code may read the state from other
threads, so every mutable piece sits behind a lock.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

from .config import SimulatorConfig
from .faults import FaultQueue
from .prompt_cache import PromptCache
from .text import AnswerWriter, SimTokenizer

__all__ = ["SimulatorState", "mask_secret", "rate_limit_headers"]

# The quota the simulator reports, per minute, as the providers' rate-limit headers do.
_REQUESTS_PER_MINUTE = 10_000
_TOKENS_PER_MINUTE = 10_000_000

# Headers whose values are credentials. Recorded masked; a long key keeps its last four
# characters so a test can still tell which of several keys a proxy forwarded.
_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "proxy-authorization"})


def mask_secret(value: str) -> str:
    scheme, _, token = value.rpartition(" ")
    shown = token[-4:] if len(token) >= 12 else ""
    masked = "*" * (len(token) - len(shown)) + shown
    return f"{scheme} {masked}" if scheme else masked


class SimulatorState:
    """Counters, recorded requests, the fault queue and the prompt-cache memory of one app."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.tokens = SimTokenizer()
        self.answers = AnswerWriter(self.tokens)
        self.faults = FaultQueue(config.fault_schedule)
        self.prompt_cache = PromptCache(config.cache_ttl_s)
        self._lock = threading.Lock()
        self._requests = 0
        self._by_endpoint: Counter[str] = Counter()
        self._by_model: Counter[str] = Counter()
        self._by_fault: Counter[str] = Counter()
        self._recent: deque[dict[str, Any]] = deque(maxlen=config.recent_requests)
        # The request id of the last answer sent, so a test can compare what a proxy passed on.
        self.last_request_id = ""

    def record(self, path: str, headers: Mapping[str, str], body: Any) -> None:
        """Count and remember one completion request, as soon as it arrives."""
        model = body.get("model") if isinstance(body, dict) else None
        entry = {
            "path": path,
            "headers": {
                k.lower(): mask_secret(v) if k.lower() in _SECRET_HEADERS else v
                for k, v in headers.items()
            },
            "body": body,
        }
        with self._lock:
            self._requests += 1
            self._by_endpoint[path] += 1
            if isinstance(model, str):
                self._by_model[model] += 1
            self._recent.append(entry)

    def take_fault(self, requested: str | None) -> str | None:
        """The fault for a valid request (its header's, else the schedule's), counted."""
        fault = self.faults.take(requested)
        if fault is not None:
            with self._lock:
                self._by_fault[fault] += 1
        return fault

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "last_request_id": self.last_request_id,
                "requests": self._requests,
                "by_endpoint": dict(self._by_endpoint),
                "by_model": dict(self._by_model),
                "faults_injected": sum(self._by_fault.values()),
                "by_fault": dict(self._by_fault),
                "pending_faults": self.faults.pending(),
                "prompt_cache_entries": len(self.prompt_cache),
            }

    def recent(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._recent)

    def reset(self) -> None:
        with self._lock:
            self._requests = 0
            self._by_endpoint.clear()
            self._by_model.clear()
            self._by_fault.clear()
            self._recent.clear()
        self.faults.replace(())
        self.prompt_cache.clear()


def rate_limit_headers(state: SimulatorState, tokens: int, pattern: str) -> dict[str, str]:
    """The provider's rate-limit headers (``pattern`` formats (field, resource) into a name:
    ``x-ratelimit-{}-{}`` for OpenAI, ``anthropic-ratelimit-{1}-{0}`` for Anthropic)."""
    used = int(state.stats()["requests"])
    values = {
        "requests": (_REQUESTS_PER_MINUTE, max(0, _REQUESTS_PER_MINUTE - used)),
        "tokens": (_TOKENS_PER_MINUTE, max(0, _TOKENS_PER_MINUTE - tokens)),
    }
    headers = {}
    for resource, (limit, remaining) in values.items():
        headers[pattern.format("limit", resource)] = str(limit)
        headers[pattern.format("remaining", resource)] = str(remaining)
        headers[pattern.format("reset", resource)] = "1s"
    return headers
