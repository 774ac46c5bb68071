"""``semcache import FILE.jsonl``: the command line of the bulk import (``importer.py``).

Kept apart from the importer so that building the CLI's parser imports neither the encoder
nor the HTTP schemas: every other command starts in the time it did.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from .config import load_settings
from .errors import SemcacheError
from .requestlog import configure_logging

__all__ = ["DEFAULT_BATCH_SIZE", "EXIT_ABORTED", "register", "run_import"]

# Lines per chunk (one transaction each) unless --batch-size says otherwise: big enough that
# the encoder runs full batches and a commit is paid per hundreds of rows, small enough that a
# failed chunk loses little work.
DEFAULT_BATCH_SIZE = 256
# Exit status of a run stopped by bad lines (--on-error abort).
EXIT_ABORTED = 1


def register(commands: Any) -> None:
    """Add ``semcache import`` to the CLI."""
    parser = commands.add_parser(
        "import",
        help="store cache entries from a JSONL file (cache-aside records, OpenAI chat logs)",
        description="Store the answers of a JSONL file in the configured cache: one per line, "
        "a cache-aside record (what POST /v1/cache/store takes) or an OpenAI chat log line "
        '({"request": ..., "response": ...}), keyed as the proxy keys that request.',
    )
    parser.add_argument("file", type=Path, help="the JSONL file, one entry per line")
    parser.add_argument("--config", help="TOML settings file (as for semcache serve)")
    parser.add_argument("--data-dir", dest="data_dir", help="data folder (default index_data)")
    parser.add_argument(
        "--tenant",
        help="tenant the entries belong to (default: the open tenant of a server without API keys)",
    )
    parser.add_argument(
        "--model", help="model of cache-aside records that name none (default: they must)"
    )
    parser.add_argument(
        "--on-error",
        choices=("skip", "abort"),
        default="skip",
        help="skip: report bad lines and import the rest (default); abort: check every line "
        "first, and import nothing if any is bad",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive,
        default=DEFAULT_BATCH_SIZE,
        help="lines per chunk, embedded together and written in one transaction "
        f"(default {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_import)


def _positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run_import(args: argparse.Namespace) -> int:
    settings = load_settings(config_file=args.config, overrides={"data_dir": args.data_dir})
    path: Path = args.file
    if not path.is_file():
        raise SemcacheError(f"{path}: no such file")
    # Warnings only: the store's start-up lines would break into the progress bar.
    configure_logging("warning", settings.log_format)
    from .importer import run

    summary = asyncio.run(
        run(
            settings,
            path,
            tenant=args.tenant,
            model=args.model,
            batch_size=args.batch_size,
            abort=args.on_error == "abort",
            quiet=args.quiet,
        )
    )
    print(summary.line())
    return EXIT_ABORTED if summary.aborted else 0
