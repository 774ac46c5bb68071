"""uvicorn's HTTP/1.1 protocol, answering unparseable requests in semcache's error shape.

A request h11 cannot parse (``Content-Length: -1``, a broken header line) never reaches the
app, so the app's error handler cannot render it; uvicorn would answer it in plain text. This
subclass writes the same 400 as JSON, OpenAI's shape, before closing the connection.
"""

from __future__ import annotations

import h11
import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import InvalidRequest

__all__ = ["JsonErrorH11Protocol"]


class JsonErrorH11Protocol(H11Protocol):
    """``H11Protocol`` whose parse-error answer is a JSON error body."""

    def send_400_response(self, msg: str) -> None:
        error = InvalidRequest(
            "the request is not valid HTTP/1.1 (check Content-Length, Transfer-Encoding and "
            "the header lines)",
            code="invalid_http",
        )
        body = orjson.dumps(error.to_body())
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()
