"""``POST /v1/messages`` in Anthropic's wire format, plain and streamed."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .intake import Intake, raise_for_fault, read_request
from .options import RequestOptions
from .prompt_cache import CacheBlock, chain_digests
from .state import SimulatorState, rate_limit_headers
from .streaming import ChunkStream, delay, sse_event
from .text import request_seed
from .validation import optional_bool, optional_int, required_str
from .wire_errors import WireError, render_anthropic_error

__all__ = ["add_anthropic_routes", "anthropic_prompt_blocks"]

_MAX_BREAKPOINTS = 4
_TTLS = {None: None, "5m": 300.0, "1h": 3600.0}
# Tokens of role framing per message, charged with the message's first block.
_MESSAGE_FRAMING = 3


def _bad(message: str) -> WireError:
    return WireError(400, "invalid_request", message)


def _check_blocks(blocks: Any, where: str, *, text_only: bool = False) -> None:
    if not isinstance(blocks, list):
        raise _bad(f"{where}: Input should be a valid string or list of content blocks")
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _bad(f"{where}.{i}: each content block must be an object with a type")
        if text_only and (block["type"] != "text" or not isinstance(block.get("text"), str)):
            raise _bad(f"{where}.{i}: only text blocks are allowed here")


def _validate(body: dict[str, Any]) -> None:
    required_str(body, "model")
    if body.get("max_tokens") is None:
        raise _bad("max_tokens: Field required")
    optional_int(body, "max_tokens", minimum=1)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages: at least one message is required")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _bad(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if not isinstance(message.get("content"), str):
            _check_blocks(message.get("content"), f"messages.{i}.content")
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        _check_blocks(system, "system", text_only=True)
    tools = body.get("tools")
    if tools is not None and (
        not isinstance(tools, list)
        or not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools)
    ):
        raise _bad("tools: each tool must be an object with a name")
    optional_bool(body, "stream")


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def anthropic_prompt_blocks(
    body: dict[str, Any], state: SimulatorState
) -> tuple[list[CacheBlock], int]:
    """The prompt as cacheable blocks in Anthropic's prefix order (tools, system, messages).

    Returns the blocks and the prompt's total token count. Raises a 400 for more than four
    ``cache_control`` breakpoints or an unknown TTL, as the API does.
    """
    units: list[tuple[str, dict[str, Any]]] = []  # (role, block)
    for tool in body.get("tools") or []:
        units.append(("tool", tool))
    system = body.get("system")
    if isinstance(system, str):
        units.append(("system", {"type": "text", "text": system}))
    elif system:
        units.extend(("system", block) for block in system)
    first_of_message: set[int] = set()
    for message in body["messages"]:
        first_of_message.add(len(units))
        content = message["content"]
        if isinstance(content, str):
            units.append((message["role"], {"type": "text", "text": content}))
        else:
            units.extend((message["role"], block) for block in content)

    counter = state.tokens
    tokens: list[int] = []
    parts: list[bytes] = []
    ttls: list[float | None] = []
    for index, (role, block) in enumerate(units):
        plain = {k: v for k, v in block.items() if k != "cache_control"}
        if role != "tool" and plain.get("type") == "text":
            count = counter.count(str(plain.get("text", "")))
        else:
            count = counter.count(_canonical(plain).decode())
        if index in first_of_message:
            count += _MESSAGE_FRAMING
        tokens.append(count)
        parts.append(_canonical([role, plain, index in first_of_message]))
        ttls.append(_breakpoint_ttl(block, state.config.cache_ttl_s))
    if sum(t is not None for t in ttls) > _MAX_BREAKPOINTS:
        raise _bad(f"A maximum of {_MAX_BREAKPOINTS} blocks with cache_control may be provided.")
    blocks = [
        CacheBlock(tokens=t, digest=d, ttl_s=ttl)
        for t, d, ttl in zip(tokens, chain_digests(parts), ttls, strict=True)
    ]
    return blocks, sum(tokens)


def _breakpoint_ttl(block: dict[str, Any], default_ttl_s: float) -> float | None:
    control = block.get("cache_control")
    if control is None:
        return None
    if not isinstance(control, dict) or control.get("type") != "ephemeral":
        raise _bad("cache_control: type must be 'ephemeral'")
    ttl = control.get("ttl")
    if ttl not in _TTLS:
        raise _bad("cache_control.ttl: Input should be '5m' or '1h'")
    return default_ttl_s if ttl in (None, "5m") else _TTLS[ttl]


@dataclass(frozen=True)
class _Reply:
    message_id: str
    model: str
    pieces: list[str]
    stop_reason: str
    usage: dict[str, Any]
    options: RequestOptions
    fault: str | None


async def _answer(request: Request, state: SimulatorState, intake: Intake) -> Response:
    body = intake.body
    _validate(body)
    blocks, prompt_tokens = anthropic_prompt_blocks(body, state)
    options = intake.options
    fault = state.take_fault(options.fault)
    if fault is None and prompt_tokens > state.config.context_window_tokens:
        fault = "context_length"
    await raise_for_fault(fault, request, intake, state, prompt_tokens)
    read, created = state.prompt_cache.anthropic_usage(
        intake.api_key, body["model"], blocks, state.config.anthropic_cache_min_tokens
    )

    seed = request_seed(body)
    length = options.answer_tokens
    if length is None:
        length = state.answers.natural_length(seed)
    limit = int(body["max_tokens"])
    pieces = state.answers.pieces(seed, length, limit=limit)
    reply = _Reply(
        message_id="msg_01" + secrets.token_hex(11),
        model=body["model"],
        pieces=pieces,
        stop_reason="max_tokens" if length > limit else "end_turn",
        usage={
            "input_tokens": prompt_tokens - read - created,
            "cache_creation_input_tokens": created,
            "cache_read_input_tokens": read,
            "output_tokens": len(pieces),
            "service_tier": "standard",
        },
        options=options,
        fault=fault,
    )
    headers = {
        "request-id": "req_" + secrets.token_hex(12),
        **rate_limit_headers(state, prompt_tokens, "anthropic-ratelimit-{1}-{0}"),
    }
    state.last_request_id = headers["request-id"]
    if fault is not None:
        headers["x-sim-fault-injected"] = fault
    if optional_bool(body, "stream"):
        return ChunkStream(_stream(reply), headers=headers, complete=fault != "drop")

    await delay(options.ttft_s + options.per_token_s * len(pieces))
    text_block = {"type": "text", "text": "".join(pieces)}
    message = _message(reply, [text_block], reply.stop_reason, reply.usage)
    if fault == "drop":
        data = json.dumps(message).encode()

        async def half() -> AsyncIterator[bytes]:
            yield data[: len(data) // 2]

        # Promise the whole body, send half, hang up: an abrupt close mid-response.
        sized = {**headers, "content-length": str(len(data))}
        return ChunkStream(half(), headers=sized, media_type="application/json", complete=False)
    return JSONResponse(message, headers=headers)


def _message(
    reply: _Reply, content: list[dict[str, Any]], stop_reason: str | None, usage: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": reply.message_id,
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


async def _stream(reply: _Reply) -> AsyncIterator[bytes]:
    """The event sequence the API sends, framed as ``event:``/``data:`` pairs."""
    # Like the API, message_start reports the input side in full and output as begun.
    start = _message(reply, [], None, {**reply.usage, "output_tokens": min(1, len(reply.pieces))})
    yield sse_event("message_start", {"type": "message_start", "message": start})
    yield sse_event(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    yield sse_event("ping", {"type": "ping"})
    await delay(reply.options.ttft_s)
    # A dropped stream gets about half its pieces out before the connection closes.
    stop_after = max(1, len(reply.pieces) // 2) if reply.fault == "drop" else None
    for i, piece in enumerate(reply.pieces):
        if i:
            await delay(reply.options.per_token_s)
        yield sse_event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            },
        )
        if stop_after is not None and i + 1 >= stop_after:
            return
    if stop_after is not None:
        return
    yield sse_event("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield sse_event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": len(reply.pieces)},
        },
    )
    yield sse_event("message_stop", {"type": "message_stop"})


def add_anthropic_routes(app: FastAPI, state: SimulatorState) -> None:
    """Serve ``POST /v1/messages`` from ``state``."""

    @app.post("/v1/messages")
    async def messages(request: Request) -> Response:
        try:
            intake = await read_request(request, state)
            return await _answer(request, state, intake)
        except WireError as exc:
            return render_anthropic_error(exc)
