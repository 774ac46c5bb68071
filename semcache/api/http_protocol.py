"""uvicorn's HTTP/1.1 protocol, answering unparseable requests in semcache's error shape.

A request the parser cannot read (``Content-Length: -1``, a broken header line, a head still
unfinished after ``MAX_HEAD_BYTES``) never reaches the app, so the app's error handler cannot
render it; uvicorn would answer it in plain text. This subclass writes the same 400 as JSON,
OpenAI's shape, before closing the connection.

It is uvicorn's httptools protocol (llhttp, in C): h11's pure-Python parsing and framing was
about a seventh of an exact hit's CPU time (benchmarks/results/hot_path_profile.md). h11
refused to buffer more than 16 KiB of an unfinished head; uvicorn's httptools protocol has
no such bound (a header line that never ends would grow without limit), so it is kept here.
"""

from __future__ import annotations

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..errors import InvalidRequest

__all__ = ["MAX_HEAD_BYTES", "JsonErrorHttpProtocol"]

# The most bytes of an unfinished request line and headers buffered: h11's default, which
# semcache served with before. A head still unfinished past it is refused with the JSON 400.
MAX_HEAD_BYTES = 16 * 1024


class JsonErrorHttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` whose parse-error answer is a JSON error body, with h11's bound
    on an unfinished head."""

    # Bytes of the current request's head read so far; None outside a head.
    _head_bytes: int | None = None
    # Whether a request ended in the chunk being parsed.
    _ended_in_chunk = False

    def data_received(self, data: bytes) -> None:
        self._ended_in_chunk = False
        super().data_received(data)
        if self._head_bytes is None or self.transport.is_closing():
            return
        # A chunk is counted whole unless an earlier request ended in it (pipelining): then
        # only part of it is head, so it is not counted and the bound can be passed by less
        # than one read, but a request under the bound is never refused.
        if not self._ended_in_chunk:
            self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            self.send_400_response("request head too large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._ended_in_chunk = True
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        error = InvalidRequest(
            "the request is not valid HTTP/1.1 (check Content-Length, Transfer-Encoding and "
            f"the header lines; the request line and headers may take {MAX_HEAD_BYTES} bytes)",
            code="invalid_http",
        )
        body = orjson.dumps(error.to_body())
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self.transport.close()
