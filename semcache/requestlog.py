"""What one request did, for its request-log line and the dashboard's recent lists.

docs/ARCHITECTURE.md, "Request log". The HTTP layer opens a record per request
(``open_record``); code below it that learns something about the request (the tenant, the
model, tokens and cost, time spent upstream) adds to it with ``note``, which does nothing
outside a request. The record lives in a context variable, so a streamed answer, whose body is
produced after the handler returned, still writes to its own request's record.

Nothing here imports another semcache module: every layer may note.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "REQUEST_LOGGER",
    "JsonFormatter",
    "RequestJournal",
    "TextFormatter",
    "add_upstream_time",
    "configure_logging",
    "elapsed_ms",
    "note",
    "open_record",
    "prompt_text",
]

REQUEST_LOGGER = "semcache.request"

_record: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "semcache_request_record", default=None
)


@contextmanager
def open_record() -> Iterator[dict[str, Any]]:
    """A fresh record for the request running in this context, closed on exit."""
    record: dict[str, Any] = {}
    token = _record.set(record)
    try:
        yield record
    finally:
        _record.reset(token)


def note(**fields: Any) -> None:
    """Add fields to the current request's record (no-op outside a request)."""
    record = _record.get()
    if record is not None:
        record.update(fields)


def add_upstream_time(seconds: float) -> None:
    """Count time spent waiting on an upstream (every attempt, retries included)."""
    record = _record.get()
    if record is not None:
        record["upstream_ms"] = record.get("upstream_ms", 0.0) + seconds * 1000


def prompt_text(body: Mapping[str, Any]) -> str:
    """The last user turn of a chat, messages or Responses request (for ``log_prompts``)."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return _text(message.get("content"))
        return ""
    return _text(body.get("input"))


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [_text(p.get("text") if isinstance(p, dict) else p) for p in content]
        return " ".join(p for p in parts if p)
    return ""


class RequestJournal:
    """The last ``size`` request records of this process, newest last (for the dashboard)."""

    def __init__(self, size: int = 2000) -> None:
        self._lock = threading.Lock()
        self._records: deque[dict[str, Any]] = deque(maxlen=size)

    def add(self, record: Mapping[str, Any]) -> None:
        with self._lock:
            self._records.append(dict(record))

    def recent(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._records)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message> key=value ...``: one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_iso(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if fields:
            # Fields the message already shows (a request line's method, route and status).
            skip = getattr(record, "in_message", ())
            line += "".join(f" {k}={_text_value(v)}" for k, v in fields.items() if k not in skip)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        # A message or traceback over several lines: the lines after the first are indented,
        # so every record still starts a line of its own.
        return line.replace("\n", "\n    ")


# A text value with one of these is written as a JSON string.
_NEEDS_QUOTES = re.compile(r'[ "=\n]')


def _text_value(value: Any) -> str:
    # Plain numbers as json.dumps writes them, without its call (a request line has several;
    # an int subclass such as an enum still goes through json.dumps).
    if type(value) in (int, float) and math.isfinite(value):
        text = repr(value)
    else:
        text = value if isinstance(value, str) else json.dumps(value)
    if text == "" or _NEEDS_QUOTES.search(text):
        return json.dumps(text)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.perf_counter()``), to 0.01 ms."""
    return round((time.perf_counter() - started) * 1000, 2)


def configure_logging(level: str, fmt: str) -> None:
    """One stderr handler on the root logger, in ``fmt`` (text or json), for semcache's lines,
    uvicorn's (started with ``log_config=None`` so they propagate here) and libraries'."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
