"""``semcache import FILE.jsonl``: warm the cache from logs (README, "Warming the cache from logs").

Each line of the file is one answer to store, in either of two shapes:

- a cache-aside record, exactly what ``POST /v1/cache/store`` takes (``{"query", "response",
  "model", ...}``, checked by the same schema and the same store checks);
- an OpenAI chat log line, ``{"request": a chat completions request, "response": its
  chat.completion}`` (with ``namespace``, ``doc_version`` and ``ttl_s`` as the proxy's
  headers would give them), checked as the proxy checks the request and keyed as the proxy
  keys it, so that the same request through the proxy later is a HIT-EXACT and a reworded
  one can hit semantically.

The import works on the configured store directly (the settings ``semcache serve`` reads).
Lines are written in chunks of ``--batch-size``: a chunk's texts are embedded in encoder
batches and its rows written in one transaction (``CacheService.store_many``), so a crash or a
failed write leaves whole chunks only. A bad line is reported with its number; ``--on-error
skip`` goes on without it, ``--on-error abort`` checks the whole file before writing anything
and writes nothing when any line is bad.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict, ValidationError
from tqdm import tqdm

from .api.auth import OPEN_TENANT
from .api.body import field_problems, parse_json
from .api.cache_aside import Name, Number, StoreBody, prepare_store
from .app import cache_config, load_encoder, open_configured_store
from .cache.results import PreparedStore, StoreItem
from .cache.service import CacheService
from .config import Settings
from .embed.batcher import MicroBatcher
from .errors import SemcacheError, StorageError
from .proxy.call import ProxyCall
from .proxy.controls import RequestControls
from .proxy.policy import Caller
from .wire.openai import OPENAI_WIRE

__all__ = ["ImportSummary", "LineChecker", "import_file", "open_cache", "run"]


class BadLine(Exception):
    """Why one line of the file cannot be imported."""


class ChatLogLine(BaseModel):
    """An OpenAI chat log line; the optional fields are what the proxy's headers would say
    (X-Semcache-Namespace, X-Semcache-Doc-Version, X-Semcache-TTL)."""

    model_config = ConfigDict(extra="forbid")
    request: dict[str, Any]
    response: dict[str, Any]
    namespace: Name = ""
    doc_version: Name = ""
    ttl_s: Number | None = None


@dataclass(frozen=True)
class LineChecker:
    """Turns one line into the store it asks for, with the checks of the API and the proxy."""

    cache: CacheService
    tenant: str
    default_model: str | None
    max_temperature: float

    def check(self, raw: bytes) -> PreparedStore:
        """The line's store, or ``BadLine`` saying what is wrong with it."""
        try:
            value = parse_json(raw, what="the line")
        except SemcacheError as exc:
            raise BadLine(exc.message) from exc
        if not isinstance(value, dict):
            raise BadLine(f"expected a JSON object, got {type(value).__name__}")
        try:
            if "request" in value and "query" not in value:
                return self._chat_log(ChatLogLine.model_validate(value))
            if self.default_model is not None:
                value.setdefault("model", self.default_model)
            return prepare_store(self.cache, self.tenant, StoreBody.model_validate(value))
        except ValidationError as exc:
            raise BadLine(field_problems(exc)) from exc
        except SemcacheError as exc:
            raise BadLine(exc.message) from exc

    def _chat_log(self, line: ChatLogLine) -> PreparedStore:
        request = line.request
        try:
            OPENAI_WIRE.validate(request)
        except SemcacheError as exc:
            raise BadLine(f"request: {exc.message}") from exc
        reason = OPENAI_WIRE.bypass_reason(request, self.max_temperature)
        if reason is not None:
            raise BadLine(f"request: the proxy never caches this request ({reason})")
        _check_completion(line.response)
        controls = RequestControls(namespace=line.namespace, doc_version=line.doc_version)
        # The partition of this request through the proxy (its wire format's model prefix).
        call = ProxyCall(OPENAI_WIRE, Caller(self.tenant), request, controls)
        ttl = None if line.ttl_s is None else float(line.ttl_s)
        return self.cache.prepare_store(StoreItem(call.partition, request, line.response, ttl))


def _check_completion(response: dict[str, Any]) -> None:
    """An answer the proxy can serve again: a chat.completion with at least one message."""
    if response.get("object") != "chat.completion":
        raise BadLine('response: expected a chat completion ("object": "chat.completion")')
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices:
        raise BadLine("response.choices must be a non-empty array")
    for n, choice in enumerate(choices):
        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
            raise BadLine(f"response.choices.{n}.message must be an object")


@dataclass
class ImportSummary:
    """What a run did."""

    imported: int = 0
    # Bad lines: skipped, or (aborted) the reason nothing was written.
    skipped: int = 0
    seconds: float = 0.0
    aborted: bool = False

    @property
    def rate(self) -> float:
        return self.imported / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        if self.aborted:
            return f"aborted: {self.skipped} bad lines (listed above); nothing was imported"
        return (
            f"imported {self.imported} entries, skipped {self.skipped} bad lines, "
            f"in {self.seconds:.1f} s ({self.rate:.0f} entries/s)"
        )


def _lines(stream: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of every line that is not blank."""
    for number, raw in enumerate(stream, start=1):
        if raw.strip():
            yield number, raw


class _Progress:
    """The progress bar (stderr, only on a terminal) and the bad-line reports around it."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.bar = tqdm(
            total=total,
            unit="line",
            file=sys.stderr,
            disable=quiet or not sys.stderr.isatty(),
            dynamic_ncols=True,
        )

    def bad(self, number: int, reason: str) -> None:
        self.bar.write(f"line {number}: {reason}", file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


async def import_file(
    path: Path,
    checker: LineChecker,
    *,
    batch_size: int,
    abort: bool,
    quiet: bool = True,
) -> ImportSummary:
    """Import ``path`` through ``checker.cache``, reporting bad lines on stderr. With
    ``abort``, every line is checked first and nothing is written if any is bad."""
    started = time.perf_counter()
    summary = ImportSummary()
    with path.open("rb") as stream:
        total = sum(1 for _ in _lines(stream))
        if abort:
            stream.seek(0)
            summary.skipped = _count_bad(stream, checker, _Progress(total, quiet))
            if summary.skipped:
                summary.aborted = True
                return summary
        stream.seek(0)
        progress = _Progress(total, quiet)
        try:
            chunk: list[PreparedStore] = []
            first = 0  # the line number the chunk starts at
            for number, raw in _lines(stream):
                try:
                    prepared = checker.check(raw)
                except BadLine as exc:
                    summary.skipped += 1
                    progress.bad(number, str(exc))
                    progress.bar.update()
                    continue
                first = first if chunk else number
                chunk.append(prepared)
                if len(chunk) >= batch_size:
                    await _write(checker.cache, chunk, first, summary)
                    progress.bar.update(len(chunk))
                    chunk = []
            await _write(checker.cache, chunk, first, summary)
            progress.bar.update(len(chunk))
        finally:
            progress.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _count_bad(stream: BinaryIO, checker: LineChecker, progress: _Progress) -> int:
    """Check every line (the first pass of --on-error abort); report and count the bad."""
    bad = 0
    progress.bar.set_description("checking")
    try:
        for number, raw in _lines(stream):
            try:
                checker.check(raw)
            except BadLine as exc:
                bad += 1
                progress.bad(number, str(exc))
            progress.bar.update()
    finally:
        progress.close()
    return bad


async def _write(
    cache: CacheService, chunk: list[PreparedStore], first: int, summary: ImportSummary
) -> None:
    if not chunk:
        return
    try:
        await cache.store_many(chunk)
        # Rows another process (a server) stored meanwhile: indexed here too, which keeps the
        # store's list of its own ids above them short.
        await cache.workers.write(cache.storage.catch_up)
    except StorageError as exc:
        raise StorageError(
            f"{exc.message}; {summary.imported} entries from the lines before line {first} "
            f"were imported, nothing from line {first} on",
            code=exc.code,
        ) from exc
    summary.imported += len(chunk)


async def run(
    settings: Settings,
    path: Path,
    *,
    tenant: str | None,
    model: str | None,
    batch_size: int,
    abort: bool,
    quiet: bool,
) -> ImportSummary:
    """Import ``path`` into the store ``settings`` name (``tenant`` None: the open tenant)."""
    cache = open_cache(settings)
    try:
        checker = LineChecker(cache, tenant or OPEN_TENANT, model, settings.cache_max_temperature)
        return await import_file(path, checker, batch_size=batch_size, abort=abort, quiet=quiet)
    finally:
        await cache.batcher.close()
        cache.close()
        # Saves the FAISS indexes (SQLite) unless a running server owns them, which indexed
        # each chunk as it committed; a crash before this costs nothing but time, the next
        # start adds the missing vectors from SQL.
        cache.storage.close()


def open_cache(settings: Settings) -> CacheService:
    """The cache service over the configured store and encoder, for storing only (no hit
    decision, so the verifier is never loaded)."""
    encoder = load_encoder(settings)
    store = open_configured_store(settings, encoder.dim)
    # Nobody waits for company: a chunk's texts arrive together and fill the batches.
    batcher = MicroBatcher(encoder.encode, max_size=settings.batch_max_size, max_wait_s=0.0)
    # The threshold is for lookups, which an import never makes.
    return CacheService(cache_config(settings, threshold=1.0), store, batcher)
