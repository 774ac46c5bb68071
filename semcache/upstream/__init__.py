"""Provider HTTP clients and retries; the only package that imports httpx."""

from __future__ import annotations

from .client import ProviderEndpoint, UpstreamClient, UpstreamConfig, UpstreamReply
from .retry import RETRYABLE_STATUSES, RetryPolicy, parse_retry_after

__all__ = [
    "RETRYABLE_STATUSES",
    "ProviderEndpoint",
    "RetryPolicy",
    "UpstreamClient",
    "UpstreamConfig",
    "UpstreamReply",
    "parse_retry_after",
]
