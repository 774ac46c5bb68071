"""A failure the fuzz test found (and the error that ends a run when the server stops
answering), when two failures are the same, and the smaller requests the shrinker tries in
place of a failing one."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from fuzz_bodies import PROXY
from fuzz_checks import bad_control_header
from fuzz_request import Req
from fuzz_values import encode


@dataclass
class Failure:
    label: str
    problem: str
    server_line: str
    example: Req
    count: int = 1


class FatalServerError(AssertionError):
    """The server stopped answering; nothing after this would mean anything."""


TRACE_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*)$", re.M)


def signature(problem: str, server_line: str) -> tuple[str, str]:
    """What makes two failures the same: the kind of problem and the server's error line,
    with numbers (positions, timestamps, digit counts) and quoted text blanked out."""
    kind = problem.split(" ", 1)[0] if problem[:1].isdigit() else problem
    kind = re.sub(r"\d+(\.\d+)? s\b", "N s", kind)
    if " although " in problem:
        kind = problem.split(" although ", 1)[1].split(":", 1)[0].split("=", 1)[0]
    line = re.sub(r"^\S+ \S+ (?=[A-Z]+ )", "", server_line)  # the log timestamp
    line = re.sub(r"'[^'\s]*'|\"[^\"\s]*\"|b'.*'", "'…'", line)
    line = re.sub(r"\bcharacters\b", "character", line)
    return kind[:160], re.sub(r"\d+", "N", line)


def smaller_values(value: Any) -> Iterator[Any]:
    """Values one step smaller than ``value``: an item dropped, a string cut, recursively."""
    if isinstance(value, dict):
        for k in value:
            yield {key: v for key, v in value.items() if key != k}
        for k, v in value.items():
            for smaller in smaller_values(v):
                yield {**value, k: smaller}
    elif isinstance(value, list):
        for i in range(len(value)):
            yield value[:i] + value[i + 1 :]
        for i, v in enumerate(value):
            for smaller in smaller_values(v):
                yield [*value[:i], smaller, *value[i + 1 :]]
    elif isinstance(value, str) and len(value) > 8:
        yield value[: len(value) // 2]
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > 1000:
        yield 1000 if value > 0 else -1000


def smaller_requests(req: Req, value: Any, ascii_only: bool) -> Iterator[tuple[Req, Any]]:
    for name, _ in req.headers:
        if name.lower() not in ("authorization", "x-api-key"):
            fewer = tuple(h for h in req.headers if h[0] != name)
            reject = bad_control_header(fewer) if req.path in PROXY else req.must_reject
            yield replace(req, headers=fewer, must_reject=reject), value
    for smaller in smaller_values(value):
        yield replace(req, body=encode(smaller, ascii_only)), smaller
