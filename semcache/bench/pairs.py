"""Labelled pairs and context cases: the records, and their JSONL files (docs/ARCHITECTURE.md).

pairs:          {"a": str, "b": str, "label": 0|1, "id"?: str, "kind"?: str}
context cases:  {"cached": [chat messages], "new": [chat messages], "label": 0|1, ...}
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ContextCase",
    "LabelledPair",
    "PathLike",
    "check_label",
    "jsonl_objects",
    "location",
    "read_context_cases_jsonl",
    "read_pairs_jsonl",
    "write_context_cases_jsonl",
    "write_pairs_jsonl",
]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class LabelledPair:
    """A cached query ``a``, a new query ``b``, and whether ``a``'s answer also answers ``b``."""

    a: str
    b: str
    label: int
    kind: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class ContextCase:
    """A stored conversation, a looked-up one, and whether the stored answer serves the new one."""

    cached: list[dict[str, Any]]
    new: list[dict[str, Any]]
    label: int
    kind: str | None = None
    id: str | None = None


# ---------------------------------------------------------------------------------------------
# JSONL formats


def location(path: PathLike, lineno: int | None = None) -> str:
    """``file`` or ``file:line`` for error messages."""
    return f"{os.fspath(path)}:{lineno}" if lineno is not None else os.fspath(path)


def check_label(value: Any, where: str) -> int:
    """Return ``value`` if it is the integer 0 or 1, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in (0, 1):
        raise ValueError(f"{where}: label must be 0 or 1, got {value!r}")
    return value


def _optional_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    """The optional ``id``/``kind`` field as a string (numbers are converted), or None."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    return str(value)


def jsonl_objects(path: PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for every non-blank line of a JSONL file."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{location(path, lineno)}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise ValueError(
                    f"{location(path, lineno)}: expected a JSON object, got {type(obj).__name__}"
                )
            yield lineno, obj


def read_pairs_jsonl(path: PathLike) -> list[LabelledPair]:
    """Read labelled-pair JSONL (docs/ARCHITECTURE.md); fields other than ``id``/``kind`` are
    ignored."""
    pairs: list[LabelledPair] = []
    for lineno, obj in jsonl_objects(path):
        where = location(path, lineno)
        missing = [key for key in ("a", "b", "label") if key not in obj]
        if missing:
            raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
        for key in ("a", "b"):
            if not isinstance(obj[key], str):
                raise ValueError(f"{where}: {key!r} must be a string")
        pairs.append(
            LabelledPair(
                a=obj["a"],
                b=obj["b"],
                label=check_label(obj["label"], where),
                kind=_optional_str(obj, "kind", where),
                id=_optional_str(obj, "id", where),
            )
        )
    return pairs


def write_pairs_jsonl(pairs: Iterable[LabelledPair], path: PathLike) -> int:
    """Write pairs as labelled-pair JSONL (``id``/``kind`` only when set); return the count."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(out, "w", encoding="utf-8") as fh:
        for pair in pairs:
            row: dict[str, Any] = {}
            if pair.id is not None:
                row["id"] = pair.id
            row.update(a=pair.a, b=pair.b, label=check_label(pair.label, f"pair {count}"))
            if pair.kind is not None:
                row["kind"] = pair.kind
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def _check_messages(value: Any, key: str, where: str) -> list[dict[str, Any]]:
    """Return ``value`` if it is a non-empty list of chat messages with a string ``role``."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: {key!r} must be a non-empty list of chat messages")
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ValueError(f"{where}: {key}[{i}] must be an object with a string 'role'")
        if "content" not in message:
            raise ValueError(f"{where}: {key}[{i}] has no 'content'")
    return value


def read_context_cases_jsonl(path: PathLike) -> list[ContextCase]:
    """Read context-case JSONL; extra fields other than ``id``/``kind`` are ignored."""
    cases: list[ContextCase] = []
    for lineno, obj in jsonl_objects(path):
        where = location(path, lineno)
        missing = [key for key in ("cached", "new", "label") if key not in obj]
        if missing:
            raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
        cases.append(
            ContextCase(
                cached=_check_messages(obj["cached"], "cached", where),
                new=_check_messages(obj["new"], "new", where),
                label=check_label(obj["label"], where),
                kind=_optional_str(obj, "kind", where),
                id=_optional_str(obj, "id", where),
            )
        )
    return cases


def write_context_cases_jsonl(cases: Iterable[ContextCase], path: PathLike) -> int:
    """Write context-case JSONL (``id``/``kind`` only when set); return the count."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(out, "w", encoding="utf-8") as fh:
        for case in cases:
            row: dict[str, Any] = {}
            if case.id is not None:
                row["id"] = case.id
            row.update(
                cached=case.cached,
                new=case.new,
                label=check_label(case.label, f"case {count}"),
            )
            if case.kind is not None:
                row["kind"] = case.kind
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count
