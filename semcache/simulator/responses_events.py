"""The Responses API's stream as the simulator sends it: typed events, paced, maybe dropped."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import Response

from .options import RequestOptions
from .streaming import ChunkStream, delay, sse_event

__all__ = ["dropped_json", "response_events"]


def dropped_json(body: dict[str, Any], headers: dict[str, str]) -> Response:
    """A response that promises the whole body, sends half of it, and hangs up."""
    data = json.dumps(body).encode()

    async def half() -> AsyncIterator[bytes]:
        yield data[: len(data) // 2]

    sized = {**headers, "content-length": str(len(data))}
    return ChunkStream(half(), headers=sized, media_type="application/json", complete=False)


async def response_events(
    response: dict[str, Any], pieces: list[str], options: RequestOptions, *, drop: bool
) -> AsyncIterator[bytes]:
    """created, in_progress, each output item with its deltas, then completed (or incomplete).

    ``pieces`` are the text deltas of a message item; a function call's arguments go in three
    deltas. A dropped stream stops about halfway through the deltas.
    """
    sequence = 0

    def event(kind: str, **fields: Any) -> bytes:
        nonlocal sequence
        payload = {"type": kind, **fields, "sequence_number": sequence}
        sequence += 1
        return sse_event(kind, payload)

    opening = {
        **response,
        "status": "in_progress",
        "output": [],
        "usage": None,
        "incomplete_details": None,
        "completed_at": None,
    }
    await delay(options.ttft_s)
    yield event("response.created", response=opening)
    yield event("response.in_progress", response=opening)
    for index, item in enumerate(response["output"]):
        where = {"item_id": item["id"], "output_index": index}
        if item["type"] == "function_call":
            arguments = item["arguments"]
            added = {**item, "status": "in_progress", "arguments": ""}
            yield event("response.output_item.added", output_index=index, item=added)
            third = max(1, len(arguments) // 3)
            deltas = [arguments[i : i + third] for i in range(0, len(arguments), third)]
            for delta in deltas:
                await delay(options.per_token_s)
                yield event("response.function_call_arguments.delta", **where, delta=delta)
                if drop:
                    return
            yield event("response.function_call_arguments.done", **where, arguments=arguments)
        else:
            part = item["content"][0]
            at = {**where, "content_index": 0}
            added = {**item, "status": "in_progress", "content": []}
            yield event("response.output_item.added", output_index=index, item=added)
            yield event("response.content_part.added", **at, part={**part, "text": ""})
            stop_after = max(1, len(pieces) // 2) if drop else None
            for step, piece in enumerate(pieces):
                if step:
                    await delay(options.per_token_s)
                yield event("response.output_text.delta", **at, delta=piece, logprobs=[])
                if stop_after is not None and step + 1 >= stop_after:
                    return
            yield event("response.output_text.done", **at, text=part["text"], logprobs=[])
            yield event("response.content_part.done", **at, part=part)
        yield event("response.output_item.done", output_index=index, item=item)
    final = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
    yield event(final, response=response)
