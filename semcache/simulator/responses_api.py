"""``POST /v1/responses`` in OpenAI's Responses API format, plain and streamed.

The answer is deterministic: the same request gets the same words. With function ``tools``
it calls one when the request asks for it: ``tool_choice`` names the function or is
``"required"``, or the last user text mentions the function's name; once the input ends with
that call's ``function_call_output`` it answers in text. Arguments come from the function's
JSON schema, filled deterministically. Responses are remembered (unless ``store: false``) so
a ``previous_response_id`` resolves, as upstream.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .intake import Intake, raise_for_fault, read_request
from .responses_events import dropped_json, response_events
from .state import SimulatorState, rate_limit_headers
from .streaming import ChunkStream, delay
from .text import request_seed
from .validation import optional_bool, optional_int, required_str
from .wire_errors import WireError, render_openai_error

__all__ = ["add_responses_routes"]

_ROLES = frozenset({"user", "assistant", "system", "developer"})
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
# Per input message, as chat counts it: framing tokens with ids no text produces.
_FRAME_IDS = (-1, -2, -3)
_REPLY_PRIMING = 3
# Keys that change how an answer is delivered, kept, or billed, not what it says.
_NOT_SEED = frozenset(
    {"stream", "store", "background", "metadata", "user", "max_output_tokens", "prompt_cache_key"}
)
_KEPT_RESPONSES = 1000


def _bad(message: str, param: str | None = None) -> WireError:
    return WireError(400, "invalid_request", message, param=param)


@dataclass(frozen=True)
class ResponsesRequest:
    model: str
    items: list[dict[str, Any]]
    instructions: str | None
    tools: list[dict[str, Any]]
    tool_choice: Any
    stream: bool
    max_output_tokens: int | None
    previous_response_id: str | None


def _items(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise _bad("Invalid type for 'input': expected a string or an array of items.", "input")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _bad(f"Invalid type for 'input[{i}]': expected an object.", f"input[{i}]")
        if "role" in item or item.get("type") == "message":
            if item.get("role") not in _ROLES:
                raise _bad(f"Invalid value for 'input[{i}].role'.", f"input[{i}].role")
            content = item.get("content")
            if not isinstance(content, str | list) or (
                isinstance(content, list)
                and not all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in content)
            ):
                raise _bad(
                    f"Invalid type for 'input[{i}].content': expected a string or content parts.",
                    f"input[{i}].content",
                )
        elif item.get("type") == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise _bad(f"Missing required parameter: 'input[{i}].call_id'.", f"input[{i}]")
        elif not isinstance(item.get("type"), str):
            raise _bad(f"Missing required parameter: 'input[{i}].type'.", f"input[{i}].type")
    return value


def _parse(body: dict[str, Any]) -> ResponsesRequest:
    model = required_str(body, "model")
    previous = body.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        raise _bad("Invalid type for 'previous_response_id'.", "previous_response_id")
    if body.get("input") is None:
        if previous is None and body.get("conversation") is None:
            raise _bad("Missing required parameter: 'input'.", "input")
        items: list[dict[str, Any]] = []
    else:
        items = _items(body["input"])
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _bad("Invalid type for 'instructions': expected a string.", "instructions")
    tools = body.get("tools") or []
    if not isinstance(tools, list) or not all(
        isinstance(t, dict) and isinstance(t.get("type"), str) for t in tools
    ):
        raise _bad("Invalid type for 'tools': expected an array of tools.", "tools")
    for i, tool in enumerate(tools):
        if tool["type"] == "function" and not isinstance(tool.get("name"), str):
            raise _bad(f"Missing required parameter: 'tools[{i}].name'.", f"tools[{i}].name")
    choice = body.get("tool_choice", "auto")
    if choice not in ("auto", "none", "required") and not (
        isinstance(choice, dict) and isinstance(choice.get("type"), str)
    ):
        raise _bad("Invalid value for 'tool_choice'.", "tool_choice")
    optional_bool(body, "background")
    return ResponsesRequest(
        model=model,
        items=items,
        instructions=instructions,
        tools=tools,
        tool_choice=choice,
        stream=optional_bool(body, "stream"),
        max_output_tokens=optional_int(body, "max_output_tokens", minimum=16),
        previous_response_id=previous,
    )


def _item_text(item: dict[str, Any]) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(str(p.get("text", "")) for p in content or [] if p.get("type") in _TEXT_PARTS)


def _prompt_ids(req: ResponsesRequest, state: SimulatorState) -> list[int]:
    """The prompt as token ids, in prefix order: tools, instructions, then the input items."""
    counter = state.tokens
    ids: list[int] = []
    if req.tools:
        ids += counter.encode(json.dumps(req.tools, sort_keys=True, separators=(",", ":")))
    if req.instructions:
        ids += [*_FRAME_IDS, *counter.encode("developer"), *counter.encode(req.instructions)]
    for item in req.items:
        ids += _FRAME_IDS
        if "role" in item:
            ids += counter.encode(str(item["role"])) + counter.encode(_item_text(item))
        else:
            plain = {k: v for k, v in item.items() if k not in ("id", "status")}
            ids += counter.encode(json.dumps(plain, sort_keys=True, separators=(",", ":")))
    return ids


def _function_to_call(req: ResponsesRequest) -> dict[str, Any] | None:
    functions = [t for t in req.tools if t.get("type") == "function"]
    if not functions or req.tool_choice == "none":
        return None
    if req.items and req.items[-1].get("type") == "function_call_output":
        return None  # the tool answered: now the model answers in words
    choice = req.tool_choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return next((f for f in functions if f["name"] == choice.get("name")), None)
    users = [i for i in req.items if i.get("role") == "user"]
    text = _item_text(users[-1]).lower() if users else ""
    mentioned = [f for f in functions if f["name"].lower() in text]
    if mentioned:
        return mentioned[0]
    return functions[0] if choice == "required" else None


def _arguments(function: dict[str, Any], seed: bytes, state: SimulatorState) -> str:
    """Arguments that fit the function's JSON schema, the same ones for the same request."""
    schema = function.get("parameters") or {}
    properties = schema.get("properties") if isinstance(schema, dict) else None
    values: dict[str, Any] = {}
    for n, (name, spec) in enumerate((properties or {}).items()):
        spec = spec if isinstance(spec, dict) else {}
        pick = seed[n % len(seed)]
        kind = spec.get("type")
        if isinstance(spec.get("enum"), list) and spec["enum"]:
            values[name] = spec["enum"][pick % len(spec["enum"])]
        elif kind == "integer":
            values[name] = pick % 100
        elif kind == "number":
            values[name] = (pick % 400) / 4
        elif kind == "boolean":
            values[name] = bool(pick % 2)
        elif kind == "array":
            values[name] = []
        elif kind == "object":
            values[name] = {}
        else:
            word = state.answers.pieces(seed + n.to_bytes(2, "big"), 2)[0]
            values[name] = word.strip()
    return json.dumps(values, separators=(",", ":"))


def _usage(prompt: int, cached: int, output: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + output,
    }


def _response(
    body: dict[str, Any], req: ResponsesRequest, response_id: str, output: list[dict[str, Any]]
) -> dict[str, Any]:
    created = int(time.time())
    tools = [
        {"strict": True, "parameters": None, "description": None, **tool}
        if tool.get("type") == "function"
        else tool
        for tool in req.tools
    ]
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": "completed",
        "background": bool(body.get("background")),
        "completed_at": created,
        "error": None,
        "incomplete_details": None,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": body.get("max_tool_calls"),
        "model": req.model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": req.previous_response_id,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store", True) is not False,
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": req.tool_choice,
        "tools": tools,
        "top_logprobs": 0,
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


class _Known:
    """Responses the simulator stored, with their tokens, so a continuation can find them."""

    def __init__(self) -> None:
        self._tokens: OrderedDict[str, int] = OrderedDict()

    def tokens(self, response_id: str) -> int:
        if response_id not in self._tokens:
            raise WireError(
                404,
                "not_found",
                f"Previous response with id '{response_id}' not found.",
                param="previous_response_id",
            )
        return self._tokens[response_id]

    def keep(self, response_id: str, tokens: int) -> None:
        self._tokens[response_id] = tokens
        while len(self._tokens) > _KEPT_RESPONSES:
            self._tokens.popitem(last=False)


async def _answer(
    request: Request, state: SimulatorState, intake: Intake, known: _Known
) -> Response:
    started = time.perf_counter()
    body = intake.body
    req = _parse(body)
    options = intake.options
    prompt_ids = _prompt_ids(req, state)
    earlier = known.tokens(req.previous_response_id) if req.previous_response_id else 0
    prompt_tokens = earlier + len(prompt_ids) + _REPLY_PRIMING
    fault = state.take_fault(options.fault)
    if fault is None and prompt_tokens > state.config.context_window_tokens:
        fault = "context_length"
    await raise_for_fault(fault, request, intake, state, prompt_tokens)
    cached = state.prompt_cache.openai_cached_tokens(
        intake.api_key, req.model, prompt_ids, state.config.openai_cache_min_tokens
    )

    seed = request_seed({k: v for k, v in body.items() if k not in _NOT_SEED})
    response = _response(body, req, "resp_" + secrets.token_hex(24), [])
    function = _function_to_call(req)
    pieces: list[str] = []
    if function is not None:
        arguments = _arguments(function, seed, state)
        call_id = "call_" + hashlib.sha256(seed + b"call").hexdigest()[:24]
        item = {
            "id": "fc_" + secrets.token_hex(24),
            "type": "function_call",
            "status": "completed",
            "arguments": arguments,
            "call_id": call_id,
            "name": function["name"],
        }
        output_tokens = state.tokens.count(arguments) + state.tokens.count(function["name"])
    else:
        length = options.answer_tokens
        if length is None:
            length = state.answers.natural_length(seed)
        limit = req.max_output_tokens or state.config.default_max_tokens
        pieces = state.answers.pieces(seed, length, limit=limit)
        if length > limit:
            response["status"] = "incomplete"
            response["incomplete_details"] = {"reason": "max_output_tokens"}
        part = {"type": "output_text", "text": "".join(pieces), "annotations": [], "logprobs": []}
        item = {
            "id": "msg_" + secrets.token_hex(24),
            "type": "message",
            "status": "completed" if length <= limit else "incomplete",
            "role": "assistant",
            "content": [part],
        }
        output_tokens = len(pieces)
    response["output"] = [item]
    response["usage"] = _usage(prompt_tokens, cached, output_tokens)
    if response["store"]:
        known.keep(response["id"], prompt_tokens + output_tokens)

    headers = {
        "x-request-id": "req_" + secrets.token_hex(16),
        "openai-processing-ms": str(max(1, int((time.perf_counter() - started) * 1000))),
        **rate_limit_headers(state, prompt_tokens, "x-ratelimit-{}-{}"),
    }
    state.last_request_id = headers["x-request-id"]
    if fault is not None:
        headers["x-sim-fault-injected"] = fault
    if req.stream:
        events = response_events(response, pieces, options, drop=fault == "drop")
        return ChunkStream(events, headers=headers, complete=fault != "drop")
    await delay(options.ttft_s + options.per_token_s * max(len(pieces), 1))
    if fault == "drop":
        return dropped_json(response, headers)
    return JSONResponse(response, headers=headers)


def add_responses_routes(app: FastAPI, state: SimulatorState) -> None:
    """Serve ``POST /v1/responses`` from ``state``."""
    known = _Known()

    @app.post("/v1/responses")
    async def responses(request: Request) -> Response:
        try:
            intake = await read_request(request, state)
            return await _answer(request, state, intake, known)
        except WireError as exc:
            return render_openai_error(exc)
