"""Provider clients: retries, SSE, single-flight."""

from __future__ import annotations

from .client import ANTHROPIC, OPENAI, ProviderEndpoint, UpstreamClient, UpstreamConfig
from .retry import RETRYABLE_STATUSES, RetryPolicy, parse_retry_after
from .singleflight import Flight, SingleFlight
from .sse import SSEEvent, SSEParser, encode_event

__all__ = [
    "ANTHROPIC",
    "OPENAI",
    "RETRYABLE_STATUSES",
    "Flight",
    "ProviderEndpoint",
    "RetryPolicy",
    "SSEEvent",
    "SSEParser",
    "SingleFlight",
    "UpstreamClient",
    "UpstreamConfig",
    "encode_event",
    "parse_retry_after",
]
