"""Server-sent events: split an upstream byte stream into events without re-framing them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["SSEEvent", "SSEParser", "encode_event", "text_pieces"]


@dataclass(frozen=True)
class SSEEvent:
    """One event: its exact bytes (forwarded as they came) and its parsed fields."""

    raw: bytes
    event: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


class SSEParser:
    """Incremental parser: feed chunks, get whole events back."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._buffer += chunk.replace(b"\r\n", b"\n")
        events = []
        while b"\n\n" in self._buffer:
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            event = _parse(block)
            if event is not None:
                events.append(event)
        return events

    @property
    def pending(self) -> bytes:
        """Bytes of an event that has not ended yet (a truncated stream leaves some)."""
        return self._buffer


def _parse(block: bytes) -> SSEEvent | None:
    name = None
    data = []
    for line in block.decode("utf-8", "replace").split("\n"):
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    if name is None and not data:
        return None
    return SSEEvent(block + b"\n\n", name, "\n".join(data))


def encode_event(data: Any, event: str | None = None) -> bytes:
    """One SSE event; ``data`` is JSON-encoded unless it is already a string."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


def text_pieces(text: str, words_per_chunk: int) -> list[str]:
    """Split text into chunks of a few words that join back to exactly ``text``."""
    if not text:
        return []
    words = text.split(" ")
    pieces = []
    for start in range(0, len(words), words_per_chunk):
        piece = " ".join(words[start : start + words_per_chunk])
        pieces.append(piece if start == 0 else " " + piece)
    return pieces
