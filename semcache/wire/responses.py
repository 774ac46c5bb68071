"""OpenAI's Responses API (``POST /v1/responses``): request checks, bypasses, fresh objects.

Its streams (the typed events, assembled and replayed) live in responses_stream.py. A request
is keyed like a chat request (cache/keys.py): its ``input`` holds the turns, ``instructions``
the system prompt. What the upstream stores decides some answers (a ``previous_response_id``,
a ``conversation``, a stored prompt template or item): those requests bypass the cache.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from collections import OrderedDict
from typing import Any

from ..errors import InvalidRequest, SemcacheError
from .base import (
    OPENAI,
    Assembler,
    PromptView,
    require_content,
    require_model,
    temperature_bypass,
)
from .responses_stream import ResponseStreamAssembler, replay_response
from .sse import SSEEvent, encode_event

__all__ = ["RESPONSES_SCOPE", "RESPONSES_WIRE", "ResponsesWire", "fresh_response"]

RESPONSES_SCOPE = "openai-responses"

_ROLES = ("user", "assistant", "system", "developer")
_TEXT_PARTS = ("input_text", "output_text", "text")
# Ids handed out for hits, remembered so a client continuing from one (previous_response_id)
# reaches the upstream's response it was copied from.
_ORIGINS_KEPT = 10_000


def _bad(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_field")


def _check_type(body: dict[str, Any], name: str, kinds: type | tuple[type, ...], what: str) -> None:
    value = body.get(name)
    # JSON true/false would pass for a number; no field checked here takes a boolean.
    if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
        raise _bad(f"{name} must be {what}")


def _check_input(value: Any) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, list) or not value:
        raise _bad("input must be a string or a non-empty array of input items")
    for n, item in enumerate(value):
        if not isinstance(item, dict):
            raise _bad(f"input.{n} must be an object (an input item)")
        if "role" in item or item.get("type") == "message":
            if item.get("role") not in _ROLES:
                raise _bad(f"input.{n}.role must be one of {', '.join(_ROLES)}")
            if item.get("content") is None:
                raise _bad(f"input.{n}.content is required")
            require_content(f"input.{n}.content", item["content"])
        elif not isinstance(item.get("type"), str):
            raise _bad(f"input.{n}.type must be a string naming the item type")


def _check_tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise _bad("tools must be an array")
    for n, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise _bad(f"tools.{n} must be an object with a type")
        if tool["type"] == "function" and not isinstance(tool.get("name"), str):
            raise _bad(f"tools.{n}.name is required for a function tool")


def validate_request(body: dict[str, Any]) -> None:
    """The fields the flow relies on, in the shapes the API documents; a 400 names the field."""
    require_model(body)
    if body.get("input") is not None:
        _check_input(body["input"])
    elif not any(body.get(k) for k in ("previous_response_id", "conversation", "prompt")):
        raise _bad("input is required: a string or an array of input items")
    _check_type(body, "instructions", str, "a string")
    _check_tools(body.get("tools"))
    _check_type(body, "tool_choice", (str, dict), "a string or an object")
    _check_type(body, "text", dict, 'an object such as {"format": {"type": "text"}}')
    text_format = (body.get("text") or {}).get("format")
    if text_format is not None and not (
        isinstance(text_format, dict) and isinstance(text_format.get("type"), str)
    ):
        raise _bad("text.format must be an object with a type")
    for name in ("stream", "background", "store", "parallel_tool_calls"):
        if name in body and body[name] is not None and not isinstance(body[name], bool):
            raise _bad(f"{name} must be true or false")
    for name in ("temperature", "top_p"):
        _check_type(body, name, (int, float), "a number")
    limit = body.get("max_output_tokens")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise _bad("max_output_tokens must be a positive integer")
    _check_type(body, "previous_response_id", str, "a string")
    _check_type(body, "conversation", (str, dict), "a string or an object")
    _check_type(body, "metadata", dict, "an object")


def bypass_reason(body: dict[str, Any], max_temperature: float) -> str | None:
    """Why the upstream's stored state, not the request, decides this answer; or None."""
    if body.get("previous_response_id"):
        return "previous_response_id continues a response the upstream stores"
    if body.get("conversation"):
        return "conversation: the upstream holds the conversation's items"
    if body.get("background"):
        return "background: true is answered with a response to poll upstream"
    items = body.get("input")
    if isinstance(items, list) and any(
        isinstance(item, dict) and item.get("type") == "item_reference" for item in items
    ):
        return "input refers to items the upstream stores (item_reference)"
    prompt = body.get("prompt")
    if prompt and not (isinstance(prompt, dict) and prompt.get("version")):
        return "a prompt template without a version: the upstream's current one decides"
    return temperature_bypass(body, max_temperature)


def _part_text(part: Any) -> Any:
    if isinstance(part, dict) and part.get("type") in _TEXT_PARTS:
        return {"type": "text", "text": str(part.get("text") or "")}
    return part


def prompt_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The input as chat-shaped messages, for counting its tokens."""
    value = body.get("input")
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    messages: list[dict[str, Any]] = []
    for item in value if isinstance(value, list) else []:
        if not isinstance(item, dict):
            continue
        if "role" in item:
            content = item.get("content")
            parts = [_part_text(p) for p in content] if isinstance(content, list) else content
            messages.append({"role": str(item["role"]), "content": parts})
        else:
            plain = {k: v for k, v in item.items() if k not in ("id", "status")}
            messages.append({"role": "tool", "content": json.dumps(plain, sort_keys=True)})
    return messages


def fresh_response(cached: dict[str, Any], model: str) -> dict[str, Any]:
    """A cached response as a new object: fresh id and created_at, the requested model."""
    response = copy.deepcopy(cached)
    now = int(time.time())
    created, completed = response.get("created_at"), response.get("completed_at")
    response["id"] = f"resp_{secrets.token_hex(24)}"
    response["object"] = "response"
    response["created_at"] = now
    if isinstance(created, int | float) and isinstance(completed, int | float):
        response["completed_at"] = now + max(0, int(completed - created))
    response["model"] = model
    return response


class ResponsesWire:
    """``POST /v1/responses``."""

    provider = OPENAI
    path = "/responses"
    request_id_header = "x-request-id"
    cache_scope = RESPONSES_SCOPE

    def __init__(self) -> None:
        # hit id -> id of the upstream response it copies (in this process, the latest kept).
        self._origins: OrderedDict[str, str] = OrderedDict()

    def validate(self, body: dict[str, Any]) -> None:
        validate_request(body)

    def prompt(self, body: dict[str, Any]) -> PromptView:
        return PromptView(
            prompt_messages(body),
            body.get("instructions"),
            body.get("tools"),
            trimmable=False,
            output_cap="max_output_tokens",
        )

    def bypass_reason(self, body: dict[str, Any], max_temperature: float) -> str | None:
        return bypass_reason(body, max_temperature)

    def upstream_body(self, body: dict[str, Any]) -> dict[str, Any]:
        # A conversation continued from a hit goes on from the upstream response it copies.
        origin = self._origins.get(str(body.get("previous_response_id") or ""))
        return {**body, "previous_response_id": origin} if origin else body

    def assembler(self) -> Assembler:
        return ResponseStreamAssembler()

    def to_client(self, event: SSEEvent, body: dict[str, Any]) -> bytes | None:
        return event.raw

    def fresh(self, cached: dict[str, Any], model: str) -> dict[str, Any]:
        response = fresh_response(cached, model)
        if isinstance(cached.get("id"), str):
            self._origins[response["id"]] = cached["id"]
            while len(self._origins) > _ORIGINS_KEPT:
                self._origins.popitem(last=False)
        return response

    def replay(self, response: dict[str, Any], body: dict[str, Any]) -> list[bytes]:
        return replay_response(response)

    def error_body(self, error: SemcacheError) -> dict[str, Any]:
        """OpenAI's error shape, ``{"error": {"type", "message", "code"}}``."""
        return error.to_body()

    def error_event(self, message: str) -> bytes:
        payload = {
            "type": "error",
            "code": "upstream_error",
            "message": message,
            "param": None,
            "sequence_number": 0,
        }
        return encode_event(payload, "error")


RESPONSES_WIRE = ResponsesWire()
