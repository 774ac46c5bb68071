"""The caching proxy's request flow, independent of HTTP."""

from __future__ import annotations

from .call import ProxyCall, ProxyConfig, ProxyResponse
from .controls import RequestControls
from .flow import ProxyService

__all__ = [
    "ProxyCall",
    "ProxyConfig",
    "ProxyResponse",
    "ProxyService",
    "RequestControls",
]
