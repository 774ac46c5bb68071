"""The larger lexicon of synthetic generator version 3 (``training/synthetic.py``).

Three hand-written word lists under ``training/lexicon/`` (beside this module): synonyms (a
positive swaps a word for one of its group), antonyms and contrasts (a negative swaps a word for
its opposite, or for a related but different thing: refund -> exchange). Each is merged with
the smaller lists of ``synthetic_words`` that versions 1 and 2 use, so version 3 only adds. Read
once, on first use, not at import.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import synthetic_words as vocab

__all__ = ["LEXICON_DIR", "Lexicon", "lexicon", "read_groups"]

LEXICON_DIR = Path(__file__).resolve().parent / "lexicon"


@dataclass(frozen=True)
class Lexicon:
    """Each word or phrase (lower case) to the words that may replace it."""

    synonym_of: dict[str, tuple[str, ...]]
    antonym_of: dict[str, tuple[str, ...]]
    contrast_of: dict[str, tuple[str, ...]]


def read_groups(name: str) -> list[tuple[str, ...]]:
    """The groups of ``training/lexicon/<name>.txt``: one per line, ``" | "`` between
    members, ``#`` comments."""
    text = (LEXICON_DIR / f"{name}.txt").read_text(encoding="utf-8")
    groups = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            groups.append(tuple(member.strip() for member in line.split("|")))
    return groups


def _members_of(groups: list[tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    return {member.lower(): group for group in groups for member in group}


@functools.cache
def lexicon() -> Lexicon:
    """Version 3's lexicon: the files above merged with ``synthetic_words``' lists."""
    antonyms = [*vocab.ANTONYMS, *read_groups("antonyms")]
    antonym_of: dict[str, tuple[str, ...]] = {}
    for a, b in antonyms:
        antonym_of[a] = (b,)
        antonym_of[b] = (a,)
    return Lexicon(
        synonym_of=_members_of([*vocab.SYNONYMS, *read_groups("synonyms")]),
        antonym_of=antonym_of,
        contrast_of=_members_of(read_groups("contrasts")),
    )
