"""Cache keys: the partition, the exact key, the context hash and the semantic text.

docs/ARCHITECTURE.md, "Keys": the exact key is xxh3_128 of the canonical JSON of the partition
plus every request field that changes the answer; the context hash covers everything but the
last user message; the semantic text is the last user message with its text parts joined.
A chat request holds its turns in ``messages``; a Responses API request in ``input`` (a string,
or a list of input items); an embeddings request is keyed item by item (``embedding_keys``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import xxhash

from ..store.base import Partition

__all__ = [
    "ANSWER_FIELDS",
    "Partition",
    "RequestKeys",
    "canonical_json",
    "context_hash",
    "embedding_keys",
    "exact_key",
    "message_text",
    "normalize_query",
    "request_keys",
    "split_last_user_message",
]

# Fields that change the answer and therefore belong in the exact key. Fields that do not
# (`stream`, `user`, `metadata`, `stream_options`) are left out so a streamed and a plain
# request share one entry.
ANSWER_FIELDS = (
    "messages",
    "system",
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "response_format",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "stop_sequences",
    "max_tokens",
    "max_completion_tokens",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "reasoning_effort",
    "thinking",
    "n",
    # The Responses API's own names (its requests have no ``messages``).
    "input",
    "instructions",
    "text",
    "max_output_tokens",
    "reasoning",
    "include",
    "truncation",
    "prompt",
)
# Answer-changing fields keyed only for a Responses API request: chat keys stay as they were.
_RESPONSES_ONLY_FIELDS = ("parallel_tool_calls", "max_tool_calls")

# Everything but the messages themselves that shapes the conversation an answer belongs to.
_CONTEXT_FIELDS = (
    "system",
    "tools",
    "tool_choice",
    "functions",
    "response_format",
    "instructions",
    "text",
)


# Punctuation that never changes what is asked; symbols that can (+ in C++, #, $, %, -) stay,
# and a full stop becomes a space, so "1.5" never equals "15".
_APOSTROPHES = re.compile(r"['’‘`]")
_PUNCTUATION = re.compile(r"[.,?!;:\"“”()\[\]{}…¿¡]+")


def normalize_query(text: str) -> str:
    """Lower case, punctuation and spacing dropped: two queries equal after this ask the same."""
    text = _APOSTROPHES.sub("", text.lower())
    return " ".join(_PUNCTUATION.sub(" ", text).split())


@dataclass(frozen=True)
class RequestKeys:
    """The three things a lookup needs: exact key, context hash and the text to embed."""

    exact_key: str
    context_hash: str
    semantic_text: str


# json.dumps with these options builds an encoder per call; one shared encoder writes the
# same text (keys must never change: stored entries are found by them) without that cost.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no insignificant whitespace; strings are kept byte for byte."""
    return _CANONICAL.encode(value)


def _hash(value: Any) -> str:
    return xxhash.xxh3_128_hexdigest(canonical_json(value).encode("utf-8"))


def message_text(message: Mapping[str, Any]) -> str:
    """The text of one chat message: a string, or its text parts joined by newlines."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = [
            part.get("text", "")
            for part in content
            if isinstance(part, Mapping) and part.get("type") in ("text", "input_text")
        ]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def split_last_user_message(
    messages: Sequence[Mapping[str, Any]],
) -> tuple[list[Mapping[str, Any]], Mapping[str, Any] | None]:
    """(everything before the last user message, the last user message or None)."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            return list(messages[:index]) + list(messages[index + 1 :]), messages[index]
    return list(messages), None


def _is_responses(request: Mapping[str, Any]) -> bool:
    return "input" in request and "messages" not in request


def _turns(request: Mapping[str, Any]) -> tuple[str, list[Mapping[str, Any]]]:
    """(the field holding the conversation, its turns as role-bearing items).

    A Responses API ``input`` string is one user message; its list items without a role
    (function calls, their outputs) stay in the list and so in the context.
    """
    if not _is_responses(request):
        return "messages", list(request.get("messages") or [])
    value = request.get("input")
    if isinstance(value, str):
        return "input", [{"role": "user", "content": value}]
    items = value if isinstance(value, list) else []
    return "input", [item for item in items if isinstance(item, Mapping)]


def exact_key(partition: Partition, request: Mapping[str, Any]) -> str:
    """xxh3_128 of the partition plus every answer-changing field of the request."""
    names = ANSWER_FIELDS + (_RESPONSES_ONLY_FIELDS if _is_responses(request) else ())
    fields = {name: request[name] for name in names if name in request}
    return _hash({"partition": partition.as_list(), "request": fields})


def context_hash(request: Mapping[str, Any]) -> str:
    """Hash of everything but the last user message that changes the answer."""
    field, turns = _turns(request)
    rest, _ = split_last_user_message(turns)
    context = {name: request[name] for name in _CONTEXT_FIELDS if name in request}
    context[field] = rest
    return _hash(context)


def request_keys(partition: Partition, request: Mapping[str, Any]) -> RequestKeys:
    """All keys of a chat request (OpenAI or Anthropic shape) or a Responses API request."""
    _, last_user = split_last_user_message(_turns(request)[1])
    return RequestKeys(
        exact_key=exact_key(partition, request),
        context_hash=context_hash(request),
        semantic_text=message_text(last_user) if last_user is not None else "",
    )


# Embedding entries are found by their exact key only; they share one context hash.
_EMBEDDING_CONTEXT = _hash({"embedding": True})


def embedding_keys(partition: Partition, item: Any, dimensions: int | None) -> RequestKeys:
    """The keys of one item of an embeddings request (a string or a list of token ids).

    The answer is the item's vector: the partition (its model), the item and ``dimensions``
    decide it. ``encoding_format`` does not: an entry answers either format. There is no
    semantic text, since a rewording has a vector of its own.
    """
    request = {"embedding": item, "dimensions": dimensions}
    return RequestKeys(
        exact_key=_hash({"partition": partition.as_list(), "request": request}),
        context_hash=_EMBEDDING_CONTEXT,
        semantic_text="",
    )
