"""Two queries that differ only by misspelt words ask the same thing.

The cross-encoder verifier was trained on many near-copy negatives where one changed word
changes the answer, and it reads a misspelt word the same way: "how do i chnage my biling
address" against "How do I change my billing address?" scored 0.58 (threshold 0.875), "where
can i downlod my invoices" 0.19. A typo'd repeat is one of the most common near-duplicates in
real traffic, so it is decided here, without the model, and conservatively:

* the two queries, after ``normalize_query``, have the same number of words and differ in at
  least one position; every differing pair of words is a typo pair;
* a typo pair: both words alphabetic and at least 4 letters; exactly one of them is a whole
  word of the verifier's WordPiece vocabulary (the correct spelling; a misspelling is split
  into pieces), so two real words ("cart" / "card") never pass; not a prefix away from each
  other ("hide" / "unhide", "install" / "uninstall"); not a negated contraction ("have" /
  "havent"); and at most 1 edit apart (2 for words longer than 7 letters), counting a swap of
  two neighbouring letters as one edit.

On the verifier's held-out pairs (15,049) this rule matched 147 positives and no real negative.
"""

from __future__ import annotations

from collections.abc import Container

__all__ = ["differ_only_by_typos", "edit_distance"]

# Prefixes that turn a word into its opposite or another action; a word and its prefixed form
# are never a typo pair.
_PREFIXES = (
    "un",
    "de",
    "dis",
    "in",
    "im",
    "il",
    "ir",
    "non",
    "re",
    "anti",
    "mis",
    "pre",
    "over",
    "under",
    "off",
    "en",
)


def edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions, adjacent swaps."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1]


def _typo_pair(x: str, y: str, vocabulary: Container[str]) -> bool:
    if not (x.isalpha() and y.isalpha()) or min(len(x), len(y)) < 4:
        return False
    if (x in vocabulary) == (y in vocabulary):
        return False
    if x.endswith("nt") != y.endswith("nt"):
        return False
    if any(x == p + y or y == p + x for p in _PREFIXES):
        return False
    return edit_distance(x, y) <= (1 if max(len(x), len(y)) <= 7 else 2)


def differ_only_by_typos(a: str, b: str, vocabulary: Container[str]) -> bool:
    """True when normalized ``a`` and ``b`` differ, and only by typo pairs (module doc).

    ``a`` and ``b`` are already normalized (``normalize_query``); ``vocabulary`` holds the
    tokenizer's whole-word entries.
    """
    wa, wb = a.split(), b.split()
    if len(wa) != len(wb):
        return False
    diff = [(x, y) for x, y in zip(wa, wb, strict=True) if x != y]
    return bool(diff) and all(_typo_pair(x, y, vocabulary) for x, y in diff)
