"""What differs between the OpenAI and Anthropic wire formats, behind one small interface."""

from __future__ import annotations

import json
from typing import Any, Protocol

from ..errors import InvalidRequest
from ..upstream.anthropic_wire import MessageStreamAssembler, fresh_message, replay_message
from ..upstream.client import ANTHROPIC, OPENAI
from ..upstream.openai_wire import ChatStreamAssembler, fresh_completion, replay_completion
from ..upstream.sse import SSEEvent, encode_event

__all__ = ["ANTHROPIC_WIRE", "OPENAI_WIRE", "AnthropicWire", "OpenAIWire", "Wire"]


class Assembler(Protocol):
    @property
    def complete(self) -> bool: ...

    def feed_event(self, event: SSEEvent) -> None: ...

    def result(self) -> dict[str, Any]: ...


class Wire(Protocol):
    """One provider's request and response format."""

    provider: str
    path: str

    def validate(self, body: dict[str, Any]) -> None: ...

    def bypass_reason(self, body: dict[str, Any], max_temperature: float) -> str | None: ...

    def upstream_body(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def assembler(self) -> Assembler: ...

    def to_client(self, event: SSEEvent, body: dict[str, Any]) -> bytes | None: ...

    def fresh(self, cached: dict[str, Any], model: str) -> dict[str, Any]: ...

    def replay(self, response: dict[str, Any], body: dict[str, Any]) -> list[bytes]: ...

    def error_event(self, message: str) -> bytes: ...


def _require_messages(body: dict[str, Any]) -> None:
    """The fields every chat request needs, in the shapes the rest of the flow relies on."""
    if not isinstance(body.get("model"), str) or not body["model"].strip():
        raise InvalidRequest("model is required and must be a string", code="invalid_field")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty array", code="invalid_field")
    for n, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(
                f"messages.{n} must be an object with a role", code="invalid_field"
            )
        _require_content(f"messages.{n}.content", message.get("content"))
    if "stream" in body and not isinstance(body["stream"], bool):
        raise InvalidRequest("stream must be true or false", code="invalid_field")
    for name in ("tools", "stop_sequences"):
        if body.get(name) is not None and not isinstance(body[name], list):
            raise InvalidRequest(f"{name} must be an array", code="invalid_field")
    _require_number(body, "temperature")
    _require_number(body, "top_p")


def _require_content(where: str, content: Any) -> None:
    # A string, an array of content parts (objects), or null (an assistant turn that only
    # calls tools). Anything else would be read as no text and key the wrong entry.
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list) or not all(isinstance(part, dict) for part in content):
        raise InvalidRequest(
            f"{where} must be a string or an array of content parts (objects)",
            code="invalid_field",
        )


def _require_number(body: dict[str, Any], name: str) -> None:
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise InvalidRequest(f"{name} must be a number", code="invalid_field")


def _temperature_bypass(body: dict[str, Any], max_temperature: float) -> str | None:
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and temperature > max_temperature:
        return f"temperature {temperature} is above the cache ceiling {max_temperature}"
    return None


class _ChatAssembler(ChatStreamAssembler):
    def feed_event(self, event: SSEEvent) -> None:
        self.feed(event.data)


class _MessageAssembler(MessageStreamAssembler):
    def feed_event(self, event: SSEEvent) -> None:
        self.feed(event.event, event.data)


class OpenAIWire:
    """``POST /v1/chat/completions``."""

    provider = OPENAI
    path = "/chat/completions"

    def validate(self, body: dict[str, Any]) -> None:
        _require_messages(body)
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise InvalidRequest(
                'stream_options must be an object such as {"include_usage": true}',
                code="invalid_field",
            )
        n = body.get("n", 1)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise InvalidRequest("n must be a positive integer", code="invalid_field")

    def bypass_reason(self, body: dict[str, Any], max_temperature: float) -> str | None:
        if body.get("n", 1) > 1:
            return "n > 1 asks for several different answers"
        return _temperature_bypass(body, max_temperature)

    def upstream_body(self, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("stream"):
            return body
        # The stored answer needs its usage; the client gets the usage chunk only if it asked.
        options = {**(body.get("stream_options") or {}), "include_usage": True}
        return {**body, "stream_options": options}

    def assembler(self) -> Assembler:
        return _ChatAssembler()

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

    def error_event(self, message: str) -> bytes:
        return encode_event({"error": {"type": "upstream_error", "message": message}})


class AnthropicWire:
    """``POST /v1/messages``."""

    provider = ANTHROPIC
    path = "/v1/messages"

    def validate(self, body: dict[str, Any]) -> None:
        _require_messages(body)
        _require_content("system", body.get("system"))
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise InvalidRequest(
                "max_tokens is required and must be a positive integer", code="invalid_field"
            )

    def bypass_reason(self, body: dict[str, Any], max_temperature: float) -> str | None:
        return _temperature_bypass(body, max_temperature)

    def upstream_body(self, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def assembler(self) -> Assembler:
        return _MessageAssembler()

    def to_client(self, event: SSEEvent, body: dict[str, Any]) -> bytes | None:
        return event.raw

    def fresh(self, cached: dict[str, Any], model: str) -> dict[str, Any]:
        return fresh_message(cached, model)

    def replay(self, response: dict[str, Any], body: dict[str, Any]) -> list[bytes]:
        return replay_message(response)

    def error_event(self, message: str) -> bytes:
        payload = {"type": "error", "error": {"type": "api_error", "message": message}}
        return encode_event(payload, "error")


OPENAI_WIRE = OpenAIWire()
ANTHROPIC_WIRE = AnthropicWire()
