"""Anthropic's Messages format: request checks, stream assembly, cached-answer replay, errors."""

from __future__ import annotations

import copy
import json
import secrets
from typing import Any

from ..errors import InvalidRequest, SemcacheError
from .base import (
    ANTHROPIC,
    Assembler,
    PromptView,
    require_content,
    require_messages,
    temperature_bypass,
)
from .sse import SSEEvent, encode_event, text_pieces

__all__ = [
    "ANTHROPIC_WIRE",
    "AnthropicWire",
    "MessageStreamAssembler",
    "fresh_message",
    "replay_message",
]

# Anthropic's error ``type`` for each status semcache answers with.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


class MessageStreamAssembler:
    """Rebuilds the Message object from message_start ... message_stop events."""

    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None
        self.blocks: dict[int, dict[str, Any]] = {}
        self.partial_json: dict[int, str] = {}
        self.done = False
        self.errored = False

    def feed_event(self, event: SSEEvent) -> None:
        self.feed(event.event, event.data)

    def feed(self, event: str | None, data: str) -> None:
        payload = json.loads(data) if data else {}
        kind = event or payload.get("type")
        if kind == "message_start":
            self.message = copy.deepcopy(payload["message"])
        elif kind == "content_block_start":
            self.blocks[payload["index"]] = copy.deepcopy(payload["content_block"])
        elif kind == "content_block_delta":
            block = self.blocks.setdefault(payload["index"], {"type": "text", "text": ""})
            delta = payload.get("delta") or {}
            if delta.get("type") == "text_delta":
                block["text"] = block.get("text", "") + delta.get("text", "")
            elif delta.get("type") == "input_json_delta":
                index = payload["index"]
                self.partial_json[index] = self.partial_json.get(index, "") + delta.get(
                    "partial_json", ""
                )
            elif delta.get("type") == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
        elif kind == "message_delta" and self.message is not None:
            self.message.update(payload.get("delta") or {})
            usage = payload.get("usage") or {}
            self.message.setdefault("usage", {}).update(usage)
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self.errored = True

    @property
    def complete(self) -> bool:
        return (
            self.done
            and not self.errored
            and self.message is not None
            and bool(self.message.get("stop_reason"))
        )

    def result(self) -> dict[str, Any]:
        assert self.message is not None
        message = copy.deepcopy(self.message)
        content = []
        for index in sorted(self.blocks):
            block = self.blocks[index]
            if block.get("type") == "tool_use" and index in self.partial_json:
                block["input"] = json.loads(self.partial_json[index] or "{}")
            content.append(block)
        message["content"] = content
        return message


def fresh_message(cached: dict[str, Any], model: str) -> dict[str, Any]:
    """A cached message as a new object: fresh id, the requested model."""
    message = copy.deepcopy(cached)
    message["id"] = f"msg_{secrets.token_hex(12)}"
    message["model"] = model
    return message


def replay_message(message: dict[str, Any], *, words_per_chunk: int = 4) -> list[bytes]:
    """The message as Anthropic's event sequence, text in several deltas."""
    usage = message.get("usage") or {}
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**usage, "output_tokens": min(1, usage.get("output_tokens", 0))}
    events = [
        encode_event({"type": "message_start", "message": start}, "message_start"),
        encode_event({"type": "ping"}, "ping"),
    ]
    for index, block in enumerate(message.get("content") or []):
        kind = block.get("type")
        opening: dict[str, Any]
        if kind == "text":
            opening = {"type": "text", "text": ""}
            deltas = [
                {"type": "text_delta", "text": p}
                for p in text_pieces(block["text"], words_per_chunk)
            ]
        elif kind == "tool_use":
            opening = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": json.dumps(block["input"])}]
        else:
            opening, deltas = block, []
        events.append(
            encode_event(
                {"type": "content_block_start", "index": index, "content_block": opening},
                "content_block_start",
            )
        )
        for delta in deltas:
            events.append(
                encode_event(
                    {"type": "content_block_delta", "index": index, "delta": delta},
                    "content_block_delta",
                )
            )
        events.append(
            encode_event({"type": "content_block_stop", "index": index}, "content_block_stop")
        )
    events.append(
        encode_event(
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": message.get("stop_reason") or "end_turn",
                    "stop_sequence": message.get("stop_sequence"),
                },
                "usage": {"output_tokens": usage.get("output_tokens", 0)},
            },
            "message_delta",
        )
    )
    events.append(encode_event({"type": "message_stop"}, "message_stop"))
    return events


class AnthropicWire:
    """``POST /v1/messages``."""

    provider = ANTHROPIC
    path = "/v1/messages"
    request_id_header = "request-id"
    cache_scope = ANTHROPIC

    def validate(self, body: dict[str, Any]) -> None:
        require_messages(body)
        require_content("system", body.get("system"))
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise InvalidRequest(
                "max_tokens is required and must be a positive integer", code="invalid_field"
            )

    def prompt(self, body: dict[str, Any]) -> PromptView:
        return PromptView(body["messages"], body.get("system"), body.get("tools"))

    def bypass_reason(self, body: dict[str, Any], max_temperature: float) -> str | None:
        return temperature_bypass(body, max_temperature)

    def upstream_body(self, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def assembler(self) -> Assembler:
        return MessageStreamAssembler()

    def to_client(self, event: SSEEvent, body: dict[str, Any]) -> bytes | None:
        return event.raw

    def fresh(self, cached: dict[str, Any], model: str) -> dict[str, Any]:
        return fresh_message(cached, model)

    def replay(self, response: dict[str, Any], body: dict[str, Any]) -> list[bytes]:
        return replay_message(response)

    def error_body(self, error: SemcacheError) -> dict[str, Any]:
        """Anthropic's error shape, ``{"type": "error", "error": {"type", "message"}}``."""
        kind = _ERROR_TYPES.get(error.status_code, "api_error")
        return {"type": "error", "error": {"type": kind, "message": error.message}}

    def error_event(self, message: str) -> bytes:
        payload = {"type": "error", "error": {"type": "api_error", "message": message}}
        return encode_event(payload, "error")


ANTHROPIC_WIRE = AnthropicWire()
