"""How the verifier reads a pair of questions: when two ask the same without the model, and
how a pair too long for the model's window is cut so that the part where they differ is read
(``verifier``'s module doc, points 2 and 3).
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from .keys import normalize_query
from .typos import differ_only_by_typos

__all__ = ["fit_to_window", "focus_on_difference", "same_question"]


def same_question(a: str, b: str, vocabulary: Container[str]) -> bool:
    """``a`` and ``b`` ask the same: equal after ``normalize_query``, or different only by
    misspelt words (``semcache.cache.typos``)."""
    na, nb = normalize_query(a), normalize_query(b)
    return na == nb or differ_only_by_typos(na, nb, vocabulary)


def focus_on_difference(a: str, b: str, context: int = 12) -> tuple[str, str]:
    """``a`` and ``b`` without the words they share at the start and at the end, but for
    ``context`` words on each side; an elided part is marked with "...".

    For pairs too long for the verifier's window: truncation would cut off the part where two
    long prompts differ (the payload of a shared template).
    """
    wa, wb = a.split(), b.split()
    start = 0
    while start < min(len(wa), len(wb)) and wa[start] == wb[start]:
        start += 1
    end = 0
    while end < min(len(wa), len(wb)) - start and wa[-1 - end] == wb[-1 - end]:
        end += 1
    keep_from = max(0, start - context)
    keep_tail = max(0, end - context)

    def cut(words: list[str]) -> str:
        middle = words[keep_from : len(words) - keep_tail]
        head = ["..."] if keep_from else []
        tail = ["..."] if keep_tail else []
        return " ".join(head + middle + tail)

    return cut(wa), cut(wb)


def _token_counts(tokenizer: Any, texts: list[str]) -> list[int]:
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        # Truncated at the window at most, which still tells a pair that does not fit.
        return [len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    ids = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    return [len(i) for i in ids]


def fit_to_window(tokenizer: Any, a: str, b: str, max_length: int) -> tuple[str, str]:
    """The pair as the verifier should read it: unchanged when ``[CLS] a [SEP] b [SEP]`` fits
    ``max_length`` tokens, else ``focus_on_difference(a, b)`` (module doc, point 3).

    ``tokenizer`` is a ``tokenizers.Tokenizer`` or a transformers tokenizer."""
    # A token is at least one character long (but for rare exceptions): pairs this short fit
    # without tokenising them twice.
    if len(a) + len(b) + 3 <= max_length:
        return a, b
    counts = _token_counts(tokenizer, [a, b])
    if counts[0] + counts[1] + 3 <= max_length:
        return a, b
    return focus_on_difference(a, b)
