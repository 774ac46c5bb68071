"""Delivering answers over time: SSE framing, delays, hangs and dropped connections.

``ChunkStream`` is a small ASGI response that sends chunks as an async iterator produces them.
Unlike Starlette's ``StreamingResponse`` it can stop without finishing the HTTP message, which
makes the server close the connection mid-body: that is how a ``drop`` fault looks to a client.
It also stops producing as soon as the client goes away, so slow streams do not outlive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["ChunkStream", "delay", "hang", "sse_data", "sse_event"]


def sse_data(payload: Any) -> bytes:
    """One OpenAI-style event: a ``data:`` line and a blank line."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def sse_event(event: str, payload: Mapping[str, Any]) -> bytes:
    """One Anthropic-style event: an ``event:`` line, a ``data:`` line, a blank line."""
    return f"event: {event}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


async def delay(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


async def _wait_for_disconnect(receive: Receive) -> None:
    # The body has been read already, so the next message the server sends is the disconnect.
    while (await receive())["type"] != "http.disconnect":
        pass


async def hang(request: Request, limit_s: float) -> bool:
    """Answer nothing until the client gives up or ``limit_s`` passes; True if it gave up.

    Waiting on the disconnect (not a bare sleep) frees the task as soon as the client leaves,
    so a server shutting down gracefully is not held up by a hung request.
    """
    try:
        await asyncio.wait_for(_wait_for_disconnect(request.receive), timeout=limit_s)
    except TimeoutError:
        return False
    return True


class ChunkStream(Response):
    """Streams ``chunks``; with ``complete=False`` it ends by dropping the connection."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        *,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = "text/event-stream",
        complete: bool = True,
    ) -> None:
        # Response.__init__ would add Content-Length for an empty body; set the parts directly.
        self._chunks = chunks
        self._complete = complete
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        listener = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            async for chunk in self._chunks:
                if listener.done():
                    return
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if self._complete:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            # Otherwise return with the body unfinished: uvicorn then closes the connection
            # (logging one line), and the client sees a truncated chunked or sized body.
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                await aclose()
