"""Where the shared data sets live: a folder given explicitly (``--shared-data DIR`` or
``$SEMCACHE_SHARED_DATA``), never one relative to this package, and the known files in it.

The sets are read in place and never copied into the repository (``semcache.bench.datasets``
reads them).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from ..errors import ConfigError
from .pairs import PathLike

__all__ = [
    "SHARED_DATA_ENV",
    "SHARED_SETS",
    "add_shared_data_option",
    "shared_data_dir",
    "shared_data_option",
    "shared_set_path",
]

SHARED_DATA_ENV = "SEMCACHE_SHARED_DATA"

# name -> path relative to the shared data folder (read-only constants, not state).
SHARED_SETS: Mapping[str, str] = MappingProxyType(
    {
        "qqp-test": "meancache-qqp/test.csv",
        "contextual-queries": "meancache-qqp/contextual_queries.json",
        "gptcache-mock": "gptcache/mock_data.json",
        "qqp-full": "gptcache/similiar_qqp_full.json.gz",
        "qqp-positives": "gptcache/similiar_qqp.json.gz",
        "stsb-test": "stsb-test/sts-test.csv",
        "arena-prompts": "arena-prompts-5k/prompts.jsonl",
        "arena-hard": "arena-hard-500/question.jsonl",
    }
)


def shared_data_dir(path: PathLike | None = None, *, option: str = "--shared-data") -> Path:
    """The shared data folder: ``path`` if given, else ``$SEMCACHE_SHARED_DATA``.

    Never a default relative to this package (it may be installed anywhere). ``ConfigError``
    when neither is given or the folder does not exist; ``option`` names the command's flag in
    the message.
    """
    chosen = path if path is not None else (os.environ.get(SHARED_DATA_ENV) or None)
    if chosen is None:
        raise ConfigError(
            f"no shared data folder: give {option} DIR or set ${SHARED_DATA_ENV} to the folder "
            "that holds the shared data (gptcache/, meancache-qqp/, stsb-test/, ...)"
        )
    folder = Path(chosen).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"shared data folder {folder} does not exist (from "
            f"{option if path is not None else '$' + SHARED_DATA_ENV})"
        )
    return folder


def add_shared_data_option(parser: argparse.ArgumentParser) -> None:
    """``--shared-data DIR`` (alias ``--data-dir``) for a script that reads the shared sets."""
    parser.add_argument(
        "--shared-data",
        "--data-dir",
        dest="data_dir",
        metavar="DIR",
        type=Path,
        default=None,
        help=f"shared data folder (default ${SHARED_DATA_ENV})",
    )


def shared_data_option(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Path:
    """The folder ``add_shared_data_option`` asked for, or a usage error naming what to give."""
    try:
        return shared_data_dir(args.data_dir)
    except ConfigError as exc:
        parser.error(exc.message)


def shared_set_path(name: str, data_dir: PathLike) -> Path:
    """Path of a known shared file (see ``SHARED_SETS``) under ``data_dir``.

    ``FileNotFoundError`` if it is absent; ``data_dir`` is the folder ``shared_data_dir`` gives.
    """
    try:
        relative = SHARED_SETS[name]
    except KeyError:
        known = ", ".join(sorted(SHARED_SETS))
        raise ValueError(f"unknown shared data set {name!r}; known: {known}") from None
    path = Path(data_dir) / relative
    if not path.is_file():
        raise FileNotFoundError(
            f"shared data set {name!r} not found at {path}; point --shared-data (or "
            f"${SHARED_DATA_ENV}) at the folder that holds the shared data (gptcache/, "
            "meancache-qqp/, stsb-test/, ...)"
        )
    return path
