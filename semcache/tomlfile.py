"""Reading the TOML files semcache is configured with, and reporting what is wrong in them.

One message style for every file (settings, levers, pricing, the benchmark's settings edits):
``cannot read <what> <path>: <reason>`` and ``<what> <path> is not valid TOML: <reason>``.
``schema_errors`` turns a pydantic ``ValidationError`` into one line per bad key, each named by
its dotted path (``tiers.free.max_tokens: expected an integer, got 'lots'``).
"""

from __future__ import annotations

import os
import re
import tomllib
from typing import Any

from pydantic import ValidationError

from .errors import ConfigError

__all__ = ["parse_toml", "read_text", "read_toml", "schema_errors"]

PathLike = str | os.PathLike[str]


def read_text(path: PathLike, what: str) -> str:
    """The UTF-8 text of a config file, or ConfigError naming ``what`` it is."""
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: not UTF-8 ({exc.reason})") from exc


def parse_toml(text: str, path: PathLike, what: str) -> dict[str, Any]:
    """``text`` (read from ``path``) as TOML, or ConfigError."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from exc


def read_toml(path: PathLike, what: str) -> dict[str, Any]:
    """Read and parse a TOML file; ``what`` names it in errors ("levers file")."""
    return parse_toml(read_text(path, what), path, what)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# Error types that mean "this value has the wrong type", and what the value should have been.
_EXPECTED = {
    "bool_type": "a boolean",
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "list_type": "a list",
    "sequence_str": "a list",
    "dict_type": "a table",
    "model_type": "a table",
    "finite_number": "a finite number",
}


def _key(part: str | int) -> str:
    text = str(part)
    return text if _BARE_KEY.fullmatch(text) else '"' + text.replace('"', '\\"') + '"'


def _shown(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def schema_errors(exc: ValidationError, prefix: str = "") -> list[str]:
    """``path: problem`` for each error of ``exc``, paths dotted as in TOML under ``prefix``."""
    out: list[str] = []
    for error in exc.errors():
        loc = [part for part in error["loc"] if part != "[key]"]
        path = ".".join([prefix] * bool(prefix) + [_key(p) for p in loc]) or "(file)"
        kind, ctx = error["type"], error.get("ctx") or {}
        if kind == "extra_forbidden":
            problem = "unknown section" if len(loc) == 1 and not prefix else "unknown key"
        elif kind in _EXPECTED:
            problem = f"expected {_EXPECTED[kind]}, got {_shown(error['input'])}"
        elif kind == "greater_than_equal":
            problem = f"must be at least {ctx['ge']}, got {_shown(error['input'])}"
        elif kind == "greater_than":
            bound = "positive" if ctx["gt"] == 0 else f"greater than {ctx['gt']}"
            problem = f"must be {bound}, got {_shown(error['input'])}"
        elif kind == "missing":
            problem = "required"
        else:  # our own PydanticCustomErrors, or a pydantic message
            message = error["msg"]
            problem = message[:1].lower() + message[1:]
        out.append(f"{path}: {problem}")
    return out
