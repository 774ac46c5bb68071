"""OpenAI chat completions: assemble a streamed answer, and replay a cached one as SSE."""

from __future__ import annotations

import copy
import json
import secrets
import time
from typing import Any

from .sse import encode_event, text_pieces

__all__ = ["ChatStreamAssembler", "fresh_completion", "replay_completion"]


class ChatStreamAssembler:
    """Rebuilds the ChatCompletion object from ``chat.completion.chunk`` events."""

    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None
        self.done = False

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
