"""OpenAI's chat completions format: request checks, stream assembly, cached-answer replay."""

from __future__ import annotations

import copy
import json
import secrets
import time
from typing import Any

from ..errors import InvalidRequest, SemcacheError
from .base import OPENAI, Assembler, PromptView, require_messages, temperature_bypass
from .sse import SSEEvent, encode_event, text_pieces

__all__ = [
    "OPENAI_WIRE",
    "ChatStreamAssembler",
    "OpenAIWire",
    "fresh_completion",
    "replay_completion",
]


class ChatStreamAssembler:
    """Rebuilds the ChatCompletion object from ``chat.completion.chunk`` events."""

    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None
        self.done = False

    def feed_event(self, event: SSEEvent) -> None:
        self.feed(event.data)

    def feed(self, data: str) -> None:
        if data.strip() == "[DONE]":
            self.done = True
            return
        chunk = json.loads(data)
        for key in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if key in chunk and key not in self.meta:
                self.meta[key] = chunk[key]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for part in chunk.get("choices") or []:
            index = int(part.get("index", 0))
            choice = self.choices.setdefault(
                index, {"index": index, "message": {"role": "assistant", "content": None}}
            )
            _merge_delta(choice["message"], part.get("delta") or {})
            if part.get("finish_reason"):
                choice["finish_reason"] = part["finish_reason"]
            if part.get("logprobs") is not None:
                choice["logprobs"] = part["logprobs"]

    @property
    def complete(self) -> bool:
        """[DONE] arrived and every choice said why it finished."""
        return (
            self.done
            and bool(self.choices)
            and all(c.get("finish_reason") for c in self.choices.values())
        )

    def result(self) -> dict[str, Any]:
        choices = []
        for index in sorted(self.choices):
            choice = self.choices[index]
            choice.setdefault("logprobs", None)
            message = choice["message"]
            if "tool_calls" in message:
                message["tool_calls"] = [
                    message["tool_calls"][i] for i in sorted(message["tool_calls"])
                ]
            message.setdefault("refusal", None)
            choices.append(choice)
        completion = {"object": "chat.completion", **self.meta, "choices": choices}
        if self.usage is not None:
            completion["usage"] = self.usage
        return completion


def _merge_delta(message: dict[str, Any], delta: dict[str, Any]) -> None:
    for key, value in delta.items():
        if key == "content" and value is not None:
            message["content"] = (message.get("content") or "") + value
        elif key == "tool_calls":
            calls = message.setdefault("tool_calls", {})
            for call in value:
                slot = calls.setdefault(
                    call.get("index", 0),
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                if call.get("id"):
                    slot["id"] = call["id"]
                function = call.get("function") or {}
                slot["function"]["name"] += function.get("name") or ""
                slot["function"]["arguments"] += function.get("arguments") or ""
        elif key == "role" and value:
            message["role"] = value
        elif key == "refusal" and value is not None:
            message["refusal"] = (message.get("refusal") or "") + value


def fresh_completion(cached: dict[str, Any], model: str) -> dict[str, Any]:
    """A cached completion as a new object: fresh id and created, the requested model."""
    completion = copy.deepcopy(cached)
    completion["id"] = f"chatcmpl-{secrets.token_hex(12)}"
    completion["created"] = int(time.time())
    completion["model"] = model
    completion["object"] = "chat.completion"
    return completion


def replay_completion(
    completion: dict[str, Any], *, include_usage: bool, words_per_chunk: int = 4
) -> list[bytes]:
    """The completion as SSE chunks: role, content in pieces, finish, [usage], [DONE]."""
    base = {
        "id": completion["id"],
        "object": "chat.completion.chunk",
        "created": completion["created"],
        "model": completion["model"],
    }
    if completion.get("system_fingerprint"):
        base["system_fingerprint"] = completion["system_fingerprint"]
    events = []

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {**base, "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}
        if include_usage:
            body["usage"] = None
        return encode_event(body)

    for choice in completion.get("choices", []):
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        events.append(chunk(index, {"role": "assistant", "content": ""}))
        for piece in text_pieces(message.get("content") or "", words_per_chunk):
            events.append(chunk(index, {"content": piece}))
        for n, call in enumerate(message.get("tool_calls") or []):
            delta = {"tool_calls": [{"index": n, **call}]}
            events.append(chunk(index, delta))
        events.append(chunk(index, {}, choice.get("finish_reason") or "stop"))
    if include_usage and completion.get("usage") is not None:
        events.append(encode_event({**base, "choices": [], "usage": completion["usage"]}))
    events.append(b"data: [DONE]\n\n")
    return events


class OpenAIWire:
    """``POST /v1/chat/completions``."""

    provider = OPENAI
    path = "/chat/completions"
    request_id_header = "x-request-id"
    cache_scope = OPENAI

    def validate(self, body: dict[str, Any]) -> None:
        require_messages(body)
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise InvalidRequest(
                'stream_options must be an object such as {"include_usage": true}',
                code="invalid_field",
            )
        n = body.get("n", 1)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise InvalidRequest("n must be a positive integer", code="invalid_field")

    def prompt(self, body: dict[str, Any]) -> PromptView:
        tools = body.get("tools")
        return PromptView(
            body["messages"], body.get("system"), tools, output_cap="max_completion_tokens"
        )

    def bypass_reason(self, body: dict[str, Any], max_temperature: float) -> str | None:
        if body.get("n", 1) > 1:
            return "n > 1 asks for several different answers"
        return temperature_bypass(body, max_temperature)

    def upstream_body(self, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("stream"):
            return body
        # The stored answer needs its usage; the client gets the usage chunk only if it asked.
        options = {**(body.get("stream_options") or {}), "include_usage": True}
        return {**body, "stream_options": options}

    def assembler(self) -> Assembler:
        return ChatStreamAssembler()

    def to_client(self, event: SSEEvent, body: dict[str, Any]) -> bytes | None:
        if (body.get("stream_options") or {}).get("include_usage"):
            return event.raw
        if event.data.strip() == "[DONE]":
            return event.raw
        chunk = json.loads(event.data)
        if not chunk.get("choices") and chunk.get("usage"):
            return None  # the usage chunk semcache asked for on its own behalf
        if "usage" in chunk:
            chunk.pop("usage")
            return encode_event(chunk)
        return event.raw

    def fresh(self, cached: dict[str, Any], model: str) -> dict[str, Any]:
        return fresh_completion(cached, model)

    def replay(self, response: dict[str, Any], body: dict[str, Any]) -> list[bytes]:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return replay_completion(response, include_usage=include_usage)

    def error_body(self, error: SemcacheError) -> dict[str, Any]:
        """OpenAI's error shape, ``{"error": {"type", "message", "code"}}``."""
        return error.to_body()

    def error_event(self, message: str) -> bytes:
        return encode_event({"error": {"type": "upstream_error", "message": message}})


OPENAI_WIRE = OpenAIWire()
