"""Provider wire formats: one module per format (request checks, objects, SSE framing, errors)."""

from __future__ import annotations

from .anthropic import ANTHROPIC_WIRE, AnthropicWire
from .base import ANTHROPIC, OPENAI, Assembler, PromptView, Wire
from .openai import OPENAI_WIRE, OpenAIWire
from .responses import RESPONSES_WIRE, ResponsesWire
from .sse import SSEEvent, SSEParser, encode_event

__all__ = [
    "ANTHROPIC",
    "ANTHROPIC_WIRE",
    "OPENAI",
    "OPENAI_WIRE",
    "RESPONSES_WIRE",
    "AnthropicWire",
    "Assembler",
    "OpenAIWire",
    "PromptView",
    "ResponsesWire",
    "SSEEvent",
    "SSEParser",
    "Wire",
    "encode_event",
]
