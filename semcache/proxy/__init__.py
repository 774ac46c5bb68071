"""The caching proxy's request flow, independent of HTTP."""

from __future__ import annotations

from .controls import RequestControls
from .flow import BYPASS, REFRESH, ProxyCall, ProxyConfig, ProxyResponse, ProxyService
from .wires import ANTHROPIC_WIRE, OPENAI_WIRE, AnthropicWire, OpenAIWire, Wire

__all__ = [
    "ANTHROPIC_WIRE",
    "BYPASS",
    "OPENAI_WIRE",
    "REFRESH",
    "AnthropicWire",
    "OpenAIWire",
    "ProxyCall",
    "ProxyConfig",
    "ProxyResponse",
    "ProxyService",
    "RequestControls",
    "Wire",
]
