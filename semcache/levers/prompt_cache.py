"""Provider prompt-cache annotation: let the provider's own cache see the stable prefix.

Anthropic caches only up to ``cache_control`` breakpoints the request carries (at most four),
and only prefixes above a model-dependent minimum length. ``annotate_anthropic`` marks the
stable parts in prefix order (tools, then system, then long document-like user content) so
repeated requests are billed cache reads at a tenth of the input price.

OpenAI caches prefixes of 1024+ tokens by itself; ``prompt_cache_key`` only steers requests
that share a prefix to the same cache, so it is derived from the stable prefix alone.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from .tokens import TokenCounter

__all__ = [
    "ANTHROPIC_MAX_BREAKPOINTS",
    "annotate_anthropic",
    "annotate_openai",
    "anthropic_min_cacheable_tokens",
    "openai_prompt_cache_key",
]

ANTHROPIC_MAX_BREAKPOINTS = 4
_MESSAGE_FRAMING = 3
_SYSTEM_ROLES = frozenset({"system", "developer"})
# Anthropic's published minimum cacheable prompt lengths (checked 2025-11; check again when
# models change). Anything not listed uses 1024.
_MIN_TOKENS: tuple[tuple[str, int], ...] = (
    ("opus-4-5", 4096),
    ("opus-4-6", 4096),
    ("haiku-4-5", 4096),
    ("sonnet-4-6", 2048),
    ("haiku", 2048),
)


def anthropic_min_cacheable_tokens(model: str) -> int:
    """The shortest prefix Anthropic will cache for ``model``."""
    name = model.lower()
    for fragment, tokens in _MIN_TOKENS:
        if fragment in name:
            return tokens
    return 1024


def _ephemeral() -> dict[str, str]:
    return {"type": "ephemeral"}


def _has_breakpoint(block: Any) -> bool:
    return isinstance(block, Mapping) and block.get("cache_control") is not None


def _existing_breakpoints(body: Mapping[str, Any]) -> int:
    count = sum(_has_breakpoint(t) for t in body.get("tools") or ())
    system = body.get("system")
    if isinstance(system, list):
        count += sum(_has_breakpoint(b) for b in system)
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list):
            count += sum(_has_breakpoint(b) for b in content)
    return count


def annotate_anthropic(
    body: Mapping[str, Any], min_tokens: int | None, counter: TokenCounter
) -> tuple[dict[str, Any], int]:
    """A copy of a ``/v1/messages`` body with ``cache_control`` on its stable prefixes.

    Candidates, in prefix order: the last tool, the last system block (a string system becomes
    one text block), and user text or document blocks that are themselves at least the
    minimum long. A candidate is marked only when the prefix up to it reaches ``min_tokens``
    (None: the model's published minimum), and never beyond four breakpoints in all,
    counting those the client set. Returns the body and the number of breakpoints added.
    """
    out = copy.deepcopy(dict(body))
    model = str(out.get("model", ""))
    minimum = min_tokens if min_tokens is not None else anthropic_min_cacheable_tokens(model)
    room = ANTHROPIC_MAX_BREAKPOINTS - _existing_breakpoints(out)
    if room <= 0:
        return out, 0

    # Each candidate is (prefix tokens up to and including it, a function that marks it).
    candidates: list[tuple[int, Callable[[], None]]] = []
    prefix = 0

    tools = out.get("tools")
    if isinstance(tools, list) and tools:
        prefix += sum(counter.block_tokens(model, t, is_tool=True) for t in tools)
        last_tool = tools[-1]
        if isinstance(last_tool, dict) and not _has_breakpoint(last_tool):
            candidates.append(
                (prefix, lambda: last_tool.__setitem__("cache_control", _ephemeral()))
            )

    system = out.get("system")
    if isinstance(system, str) and system:
        prefix += counter.block_tokens(model, system)

        def mark_system_string() -> None:
            out["system"] = [{"type": "text", "text": system, "cache_control": _ephemeral()}]

        candidates.append((prefix, mark_system_string))
    elif isinstance(system, list) and system:
        prefix += sum(counter.block_tokens(model, b) for b in system)
        last_block = system[-1]
        if isinstance(last_block, dict) and not _has_breakpoint(last_block):
            candidates.append(
                (prefix, lambda: last_block.__setitem__("cache_control", _ephemeral()))
            )

    for message in out.get("messages") or ():
        if not isinstance(message, dict):
            continue
        prefix += _MESSAGE_FRAMING
        content = message.get("content")
        is_user = message.get("role") == "user"
        if isinstance(content, str):
            size = counter.block_tokens(model, content)
            prefix += size
            if is_user and size >= minimum:
                candidates.append((prefix, _string_marker(message, content)))
            continue
        for block in content if isinstance(content, list) else ():
            size = counter.block_tokens(model, block)
            prefix += size
            if (
                is_user
                and isinstance(block, dict)
                and block.get("type") in ("text", "document")
                and size >= minimum
                and not _has_breakpoint(block)
            ):
                candidates.append((prefix, _block_marker(block)))

    added = 0
    for reached, mark in candidates:
        if added == room:
            break
        if reached >= minimum:
            mark()
            added += 1
    return out, added


def _string_marker(message: dict[str, Any], text: str) -> Callable[[], None]:
    def mark() -> None:
        message["content"] = [{"type": "text", "text": text, "cache_control": _ephemeral()}]

    return mark


def _block_marker(block: dict[str, Any]) -> Callable[[], None]:
    def mark() -> None:
        block["cache_control"] = _ephemeral()

    return mark


def _stable_prefix(body: Mapping[str, Any], include_history: bool) -> dict[str, Any]:
    messages = [m for m in body.get("messages") or () if isinstance(m, Mapping)]
    if include_history:
        users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
        head = messages[: users[-1]] if users else messages
    else:
        head = []
        for message in messages:
            if message.get("role") not in _SYSTEM_ROLES:
                break
            head.append(message)
    prefix: dict[str, Any] = {}
    if body.get("tools"):
        prefix["tools"] = body["tools"]
    if head:
        prefix["messages"] = head
    return prefix


def openai_prompt_cache_key(
    body: Mapping[str, Any], *, salt: str = "", include_history: bool = False
) -> str:
    """A ``prompt_cache_key`` from the request's stable prefix: tools and leading system messages.

    Later turns are left out by default because turn N+1 of a conversation extends turn N's
    prompt: keeping one key for the whole conversation keeps it on the cache that already
    holds its prefix. ``include_history`` adds every message before the last user message.
    ``salt`` (e.g. the tenant) keeps different tenants' traffic apart.
    """
    canonical = json.dumps(
        [salt, _stable_prefix(body, include_history)],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return "semcache-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def annotate_openai(
    body: Mapping[str, Any], *, salt: str = "", include_history: bool = False
) -> dict[str, Any]:
    """A copy of a chat completions body with ``prompt_cache_key`` set, unless it has one.

    A request with no tools and no system prompt has no stable prefix and is left alone:
    one key for all such traffic would pile it onto a single cache machine.
    """
    out = copy.deepcopy(dict(body))
    if out.get("prompt_cache_key") or not _stable_prefix(out, include_history):
        return out
    out["prompt_cache_key"] = openai_prompt_cache_key(
        out, salt=salt, include_history=include_history
    )
    return out
