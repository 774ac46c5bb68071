"""The Responses API's streams: assembling a relayed one, replaying a cached response as one.

A streamed response is a sequence of typed events (``response.created``, ``...output_item.added``,
``...output_text.delta``, ..., ``response.completed``), each an SSE event named by its
``type`` with a ``sequence_number``. ``response.completed`` carries the whole response, so the
assembler keeps that; the items finished along the way fill its ``output`` if a gateway left
it out.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from .sse import SSEEvent, encode_event, text_pieces

__all__ = ["ResponseStreamAssembler", "replay_response"]

# The events that end a response the upstream finished: the answer is whole (an incomplete
# one stopped at max_output_tokens, which is part of its key).
_FINAL = ("response.completed", "response.incomplete")
_FAILED = ("response.failed", "error")


class ResponseStreamAssembler:
    """Rebuilds the Response object from the Responses API's stream events."""

    def __init__(self) -> None:
        self.response: dict[str, Any] | None = None
        self.items: dict[int, dict[str, Any]] = {}
        self.errored = False

    def feed_event(self, event: SSEEvent) -> None:
        payload = json.loads(event.data) if event.data else {}
        if not isinstance(payload, dict):
            raise ValueError("a Responses API event must be a JSON object")
        kind = payload.get("type") or event.event
        if kind == "response.output_item.done" and isinstance(payload.get("item"), dict):
            self.items[int(payload.get("output_index", len(self.items)))] = payload["item"]
        elif kind in _FINAL and isinstance(payload.get("response"), dict):
            self.response = copy.deepcopy(payload["response"])
        elif kind in _FAILED:
            self.errored = True

    @property
    def complete(self) -> bool:
        return self.response is not None and not self.errored

    def result(self) -> dict[str, Any]:
        assert self.response is not None
        response = copy.deepcopy(self.response)
        if response.get("output") is None:
            response["output"] = [self.items[i] for i in sorted(self.items)]
        return response


Emit = Callable[..., None]


def replay_response(response: dict[str, Any], *, words_per_chunk: int = 4) -> list[bytes]:
    """A stored response as the event sequence the upstream streams, text in several deltas."""
    events: list[bytes] = []

    def emit(kind: str, **fields: Any) -> None:
        payload = {"type": kind, **fields, "sequence_number": len(events)}
        events.append(encode_event(payload, kind))

    opening = {
        **response,
        "status": "in_progress",
        "output": [],
        "usage": None,
        "incomplete_details": None,
        "completed_at": None,
    }
    emit("response.created", response=opening)
    emit("response.in_progress", response=opening)
    for index, item in enumerate(response.get("output") or []):
        kind = item.get("type")
        if kind == "message":
            _replay_message(emit, index, item, words_per_chunk)
        elif kind == "function_call":
            _replay_function_call(emit, index, item)
        else:
            emit("response.output_item.added", output_index=index, item=item)
            emit("response.output_item.done", output_index=index, item=item)
    incomplete = response.get("status") == "incomplete"
    emit("response.incomplete" if incomplete else "response.completed", response=response)
    return events


def _replay_message(emit: Emit, index: int, item: dict[str, Any], words_per_chunk: int) -> None:
    item_id = item.get("id", "")
    where = {"item_id": item_id, "output_index": index}
    emit(
        "response.output_item.added",
        output_index=index,
        item={**item, "status": "in_progress", "content": []},
    )
    for content_index, part in enumerate(item.get("content") or []):
        at = {**where, "content_index": content_index}
        kind = part.get("type")
        if kind == "output_text":
            text = str(part.get("text") or "")
            opening = {**part, "text": "", "annotations": []}
            emit("response.content_part.added", **at, part=opening)
            for piece in text_pieces(text, words_per_chunk):
                emit("response.output_text.delta", **at, delta=piece, logprobs=[])
            emit("response.output_text.done", **at, text=text, logprobs=[])
        elif kind == "refusal":
            refusal = str(part.get("refusal") or "")
            emit("response.content_part.added", **at, part={**part, "refusal": ""})
            emit("response.refusal.delta", **at, delta=refusal)
            emit("response.refusal.done", **at, refusal=refusal)
        else:
            emit("response.content_part.added", **at, part=part)
        emit("response.content_part.done", **at, part=part)
    emit("response.output_item.done", output_index=index, item=item)


def _replay_function_call(emit: Emit, index: int, item: dict[str, Any]) -> None:
    arguments = str(item.get("arguments") or "")
    where = {"item_id": item.get("id", ""), "output_index": index}
    opening = {**item, "status": "in_progress", "arguments": ""}
    emit("response.output_item.added", output_index=index, item=opening)
    if arguments:
        emit("response.function_call_arguments.delta", **where, delta=arguments)
    emit("response.function_call_arguments.done", **where, arguments=arguments)
    emit("response.output_item.done", output_index=index, item=item)
