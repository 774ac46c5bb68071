"""Provider wire formats: one module per format (request checks, objects, SSE framing, errors)."""

from __future__ import annotations

from .anthropic import ANTHROPIC_WIRE, AnthropicWire
from .base import ANTHROPIC, OPENAI, Assembler, Wire
from .openai import OPENAI_WIRE, OpenAIWire
from .sse import SSEEvent, SSEParser, encode_event

__all__ = [
    "ANTHROPIC",
    "ANTHROPIC_WIRE",
    "OPENAI",
    "OPENAI_WIRE",
    "AnthropicWire",
    "Assembler",
    "OpenAIWire",
    "SSEEvent",
    "SSEParser",
    "Wire",
    "encode_event",
]
