"""What every provider wire format offers the proxy, and the request checks they share.

A ``Wire`` is one provider's format: how its requests are checked and sent upstream, how its
streamed answer is assembled and relayed, how a cached answer is made fresh or replayed, and
how an error looks in it. The proxy flow talks to this interface only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import InvalidRequest, SemcacheError
from .sse import SSEEvent

__all__ = [
    "ANTHROPIC",
    "OPENAI",
    "Assembler",
    "PromptView",
    "Wire",
    "require_content",
    "require_messages",
    "require_model",
    "temperature_bypass",
]

OPENAI = "openai"
ANTHROPIC = "anthropic"


class Assembler(Protocol):
    """Rebuilds a whole answer from a provider's stream events."""

    @property
    def complete(self) -> bool: ...

    def feed_event(self, event: SSEEvent) -> None: ...

    def result(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PromptView:
    """A request's prompt as the levers count it: chat-shaped messages, system and tools."""

    messages: list[dict[str, Any]]
    system: Any = None
    tools: list[Any] | None = None
    # Whether ``messages`` are the body's own ``messages``, which history trimming may shorten.
    trimmable: bool = True
    # The field a tier's ceiling fills in when the request sets no output limit; None where
    # the format requires one (Anthropic's ``max_tokens``).
    output_cap: str | None = None


class Wire(Protocol):
    """One provider's request and response format."""

    provider: str
    path: str
    # The response header the provider's SDK reads its request id from.
    request_id_header: str
    # The model prefix of this format's cache partitions (docs/ARCHITECTURE.md, "Keys"): an
    # answer in one format never serves a client of another.
    cache_scope: str

    def validate(self, body: dict[str, Any]) -> None: ...

    def prompt(self, body: dict[str, Any]) -> PromptView: ...

    def bypass_reason(self, body: dict[str, Any], max_temperature: float) -> str | None: ...

    def upstream_body(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def assembler(self) -> Assembler: ...

    def to_client(self, event: SSEEvent, body: dict[str, Any]) -> bytes | None: ...

    def fresh(self, cached: dict[str, Any], model: str) -> dict[str, Any]: ...

    def replay(self, response: dict[str, Any], body: dict[str, Any]) -> list[bytes]: ...

    def error_body(self, error: SemcacheError) -> dict[str, Any]: ...

    def error_event(self, message: str) -> bytes: ...


def require_messages(body: dict[str, Any]) -> None:
    """The fields every chat request needs, in the shapes the rest of the flow relies on."""
    require_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty array", code="invalid_field")
    for n, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(
                f"messages.{n} must be an object with a role", code="invalid_field"
            )
        require_content(f"messages.{n}.content", message.get("content"))
    if "stream" in body and not isinstance(body["stream"], bool):
        raise InvalidRequest("stream must be true or false", code="invalid_field")
    for name in ("tools", "stop_sequences"):
        if body.get(name) is not None and not isinstance(body[name], list):
            raise InvalidRequest(f"{name} must be an array", code="invalid_field")
    _require_number(body, "temperature")
    _require_number(body, "top_p")
    # Anthropic's top-level system prompt; an OpenAI body may carry one too (the levers count
    # it as a system message), so both formats check its shape.
    require_content("system", body.get("system"))


def require_model(body: dict[str, Any]) -> None:
    """A model name: it keys the cache and goes back in response headers, so it must be a
    header-safe token (printable ASCII, no spaces), as every provider's model ids are."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("model is required and must be a string", code="invalid_field")
    if len(model) > 200 or not all("!" <= ch <= "~" for ch in model):
        raise InvalidRequest(
            "model must be a model id of at most 200 printable ASCII characters without "
            f"spaces, got {model[:60]!r}",
            code="invalid_field",
        )


def require_content(where: str, content: Any) -> None:
    """A string, an array of content parts (objects), or null (an assistant turn that only
    calls tools). Anything else would be read as no text and key the wrong entry."""
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


def temperature_bypass(body: dict[str, Any], max_temperature: float) -> str | None:
    """Why a request is too random to cache, or None."""
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and temperature > max_temperature:
        return f"temperature {temperature} is above the cache ceiling {max_temperature}"
    return None
