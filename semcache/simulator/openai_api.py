"""``POST /v1/chat/completions`` in OpenAI's wire format, plain and streamed."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .intake import Intake, raise_for_fault, read_request
from .options import RequestOptions
from .state import SimulatorState, rate_limit_headers
from .streaming import ChunkStream, delay, sse_data
from .text import SimTokenizer, request_seed
from .validation import optional_bool, optional_int, required_str
from .wire_errors import WireError, render_openai_error

__all__ = ["add_openai_routes", "openai_prompt_ids"]

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# OpenAI's published counting: every message costs 3 tokens of framing, and the reply is
# primed with 3 more. Framing tokens get ids no text can produce, so they never merge with text.
_FRAME_IDS = (-1, -2, -3)
_REPLY_PRIMING = 3
_FINGERPRINT = "fp_semcache_sim"


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    n: int
    max_tokens: int | None
    stream: bool
    include_usage: bool


def _parse(body: dict[str, Any]) -> ChatRequest:
    model = required_str(body, "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise WireError(
            400, "invalid_request", "'messages' must be a non-empty array.", param="messages"
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise WireError(
                400,
                "invalid_request",
                f"messages[{i}] must be an object with a role in {sorted(_ROLES)}.",
                param=f"messages[{i}]",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise WireError(
                400,
                "invalid_request",
                f"messages[{i}].content must be a string or an array of parts.",
                param=f"messages[{i}].content",
            )
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise WireError(400, "invalid_request", "'tools' must be an array.", param="tools")
    stream = optional_bool(body, "stream")
    options = body.get("stream_options")
    if options is not None and (not stream or not isinstance(options, dict)):
        raise WireError(
            400,
            "invalid_request",
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    include_usage = optional_bool(options or {}, "include_usage")
    n = optional_int(body, "n", minimum=1, maximum=128) or 1
    max_completion = optional_int(body, "max_completion_tokens", minimum=1)
    max_tokens = optional_int(body, "max_tokens", minimum=1)
    return ChatRequest(
        model=model,
        messages=messages,
        n=n,
        max_tokens=max_completion if max_completion is not None else max_tokens,
        stream=stream,
        include_usage=include_usage,
    )


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def openai_prompt_ids(body: dict[str, Any], counter: SimTokenizer) -> list[int]:
    """The prompt as token ids, in the order OpenAI caches it: tools first, then messages.

    Each text is encoded on its own, so a shared leading run of messages always yields the
    same leading ids, which is what prefix caching relies on.
    """
    ids: list[int] = []
    if body.get("tools"):
        ids += counter.encode(_canonical(body["tools"]))
    for message in body["messages"]:
        ids += _FRAME_IDS
        ids += counter.encode(str(message.get("role", "")))
        content = message.get("content")
        parts = [content] if isinstance(content, str) else content or []
        for part in parts:
            if isinstance(part, str):
                ids += counter.encode(part)
            elif isinstance(part, dict) and part.get("type") == "text":
                ids += counter.encode(str(part.get("text", "")))
            else:
                ids += counter.encode(_canonical(part))
        if message.get("name"):
            ids += [-4, *counter.encode(str(message["name"]))]
        for key in ("tool_calls", "function_call", "tool_call_id"):
            if message.get(key):
                ids += counter.encode(_canonical(message[key]))
    return ids


def _usage(prompt: int, cached: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


async def _answer(request: Request, state: SimulatorState, intake: Intake) -> Response:
    started = time.perf_counter()
    chat = _parse(intake.body)
    options = intake.options
    prompt_ids = openai_prompt_ids(intake.body, state.tokens)
    prompt_tokens = len(prompt_ids) + _REPLY_PRIMING
    fault = state.take_fault(options.fault)
    if fault is None and prompt_tokens > state.config.context_window_tokens:
        fault = "context_length"
    await raise_for_fault(fault, request, intake, state, prompt_tokens)
    cached = state.prompt_cache.openai_cached_tokens(
        intake.api_key, chat.model, prompt_ids, state.config.openai_cache_min_tokens
    )

    seed = request_seed(intake.body)
    length = options.answer_tokens
    if length is None:
        length = state.answers.natural_length(seed)
    limit = chat.max_tokens or state.config.default_max_tokens
    finish = "length" if length > limit else "stop"
    answers = [state.answers.pieces(seed, length, limit=limit, variant=i) for i in range(chat.n)]
    usage = _usage(prompt_tokens, cached, sum(len(a) for a in answers))
    completion_id = "chatcmpl-" + secrets.token_urlsafe(21).replace("-", "x").replace("_", "y")
    created = int(time.time())
    headers = {
        "x-request-id": "req_" + secrets.token_hex(16),
        # As OpenAI sends them: the time to the answer's first byte, and the key's quota.
        "openai-processing-ms": str(max(1, int((time.perf_counter() - started) * 1000))),
        **rate_limit_headers(state, prompt_tokens, "x-ratelimit-{}-{}"),
    }
    state.last_request_id = headers["x-request-id"]
    if fault is not None:
        headers["x-sim-fault-injected"] = fault

    if chat.stream:
        chunks = _stream(chat, answers, finish, usage, completion_id, created, options, fault)
        return ChunkStream(chunks, headers=headers, complete=fault != "drop")

    steps = max((len(a) for a in answers), default=0)
    await delay(options.ttft_s + options.per_token_s * steps)
    body = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": chat.model,
        "choices": [
            {
                "index": i,
                "message": {
                    "role": "assistant",
                    "content": "".join(pieces),
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": finish,
            }
            for i, pieces in enumerate(answers)
        ],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": _FINGERPRINT,
    }
    if fault == "drop":
        return _dropped_json(body, headers)
    return JSONResponse(body, headers=headers)


def _dropped_json(body: dict[str, Any], headers: dict[str, str]) -> Response:
    """A response that promises the whole body, sends half of it, and hangs up."""
    data = json.dumps(body).encode()

    async def half() -> AsyncIterator[bytes]:
        yield data[: len(data) // 2]

    sized = {**headers, "content-length": str(len(data))}
    return ChunkStream(half(), headers=sized, media_type="application/json", complete=False)


async def _stream(
    chat: ChatRequest,
    answers: list[list[str]],
    finish: str,
    usage: dict[str, Any],
    completion_id: str,
    created: int,
    options: RequestOptions,
    fault: str | None,
) -> AsyncIterator[bytes]:
    def chunk(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        payload: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": chat.model,
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
            "choices": [
                {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if chat.include_usage:
            payload["usage"] = None
        return sse_data(payload)

    steps = max((len(a) for a in answers), default=0)
    # A dropped stream gets about half its pieces out, and always at least one.
    stop_after = max(1, steps // 2) if fault == "drop" else None
    await delay(options.ttft_s)
    for i in range(chat.n):
        yield chunk(i, {"role": "assistant", "content": "", "refusal": None})
    for step in range(steps):
        if step:
            await delay(options.per_token_s)
        for i, pieces in enumerate(answers):
            if step < len(pieces):
                yield chunk(i, {"content": pieces[step]})
        if stop_after is not None and step + 1 >= stop_after:
            return
    if stop_after is not None:
        return
    for i in range(chat.n):
        yield chunk(i, {}, finish)
    if chat.include_usage:
        yield sse_data(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": chat.model,
                "service_tier": "default",
                "system_fingerprint": _FINGERPRINT,
                "choices": [],
                "usage": usage,
            }
        )
    yield sse_data("[DONE]")


def add_openai_routes(app: FastAPI, state: SimulatorState) -> None:
    """Serve ``POST /v1/chat/completions`` from ``state``."""

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        try:
            intake = await read_request(request, state)
            return await _answer(request, state, intake)
        except WireError as exc:
            return render_openai_error(exc)
