"""semcache: a semantic cache and cost-control tier for LLM traffic."""

from __future__ import annotations

from .config import Settings, load_settings
from .errors import (
    AuthenticationError,
    ClientError,
    ConfigError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    SemcacheError,
    StorageError,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "ClientError",
    "ConfigError",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "SemcacheError",
    "Settings",
    "StorageError",
    "UpstreamBadResponse",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "__version__",
    "load_settings",
]
