"""The request the fuzz test sends (``Req``), and the keys and nonce its strategies use.

See fuzz_runner.py for what the fuzz test does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KEY = "sk-fuzz"
FREE_KEY = "sk-fuzz-free"  # a key on the shipped "free" tier: max_tokens clamped, history trimmed
NONCE = "@@N@@"  # replaced by a fresh number in every request that carries it


@dataclass(frozen=True)
class Req:
    method: str
    path: str  # the route, with {id} where an entry id goes
    body: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    params: tuple[tuple[str, str], ...] = ()
    entry: tuple[str, Any] | None = None  # ("real", index) or ("raw", text) for {id}
    must_reject: str | None = None  # why a 2xx would be wrong
    repeat: bool = False  # on a 2xx, send it once more (a hit) with stream flipped

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    def describe(self, limit: int = 600) -> str:
        parts = [self.label]
        if self.entry is not None:
            parts.append(f"id={self.entry!r}")
        if self.params:
            parts.append(f"params={list(self.params)!r}")
        if self.headers:
            parts.append(f"headers={dict(self.headers)!r}")
        if self.body is not None:
            parts.append(f"body={shorten(self.body, limit)}")
        return " ".join(parts)

    def size(self) -> int:
        return len(self.describe(10**9))


def shorten(raw: bytes, limit: int) -> str:
    text = repr(raw)
    if len(text) <= limit:
        return text
    return f"{text[: limit // 2]}...<{len(raw)} bytes>...{text[-limit // 4 :]}"
