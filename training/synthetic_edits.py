"""The edits the synthetic pair generator applies (``training/synthetic.py``).

Each edit takes a source query and a seeded ``random.Random`` and returns the edited query, or
None when it does not apply: hard negatives (number, negation, antonym, direction, entity,
constraint, scope) and surface-change positives (typo, synonym, verbose, terse, reorder,
style), in the three versions ``generate`` knows. None may change: the shipped training stages
were made with versions 1 and 2, the recorded stage 9 with version 3
(``training/tests/test_synthetic.py`` pins their output).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable

import synthetic_words as vocab
from synthetic_lexicon import lexicon

__all__ = ["PREFERRED_V3", "Edit", "edits"]

Edit = Callable[[str, random.Random], str | None]

_WORD = re.compile(r"[A-Za-z][A-Za-z'+#.-]*[A-Za-z+#]|[A-Za-z]")
_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)(?![\w])")


def _case_like(word: str, template: str) -> str:
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def _sub_phrase(text: str, old: str, new: str) -> str:
    pattern = re.compile(r"(?<![\w])" + re.escape(old) + r"(?![\w])", re.IGNORECASE)
    return pattern.sub(lambda m: _case_like(new, m.group(0)), text, count=1)


def _find_phrases(text: str, phrases: Iterable[str]) -> list[str]:
    low = text.lower()
    # The substring test first: version 3's lexicon has about 2,000 phrases, more patterns than
    # re's cache holds, and compiling each for every text made a stage's data take 15 minutes.
    return [
        p for p in phrases if p in low and re.search(r"(?<![\w])" + re.escape(p) + r"(?![\w])", low)
    ]


# -- negatives ------------------------------------------------------------------------------


def _number(text: str, rng: random.Random) -> str | None:
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return None
    m = rng.choice(matches)
    raw = m.group(0).replace(",", "")
    value = float(raw)
    if "." in raw:
        step = rng.choice((-1, 1)) * rng.choice((0.5, 1.0, 2.5))
        new = f"{value + step:.{len(raw.split('.')[1])}f}"
    elif 1900 <= value <= 2100:
        new = str(int(value) + rng.choice((-10, -5, -2, -1, 1, 2, 5, 10)))
    else:
        v = int(value)
        candidates = [v + 1, v * 2, v * 10, max(0, v - 1), v + rng.randint(2, 20)]
        new = str(rng.choice([c for c in candidates if c != v] or [v + 1]))
    if new == raw:
        return None
    return text[: m.start()] + new + text[m.end() :]


def _negation(text: str, rng: random.Random) -> str | None:
    for neg, pos in (
        ("can't", "can"),
        ("won't", "will"),
        ("n't", ""),
        (" not ", " "),
        ("without", "with"),
        ("never", "ever"),
    ):
        if neg in text.lower():
            return re.sub(re.escape(neg), pos, text, count=1, flags=re.IGNORECASE)
    if re.search(r"\bwith\b", text, re.IGNORECASE) and rng.random() < 0.3:
        return _sub_phrase(text, "with", "without")
    words = text.split()
    spots = []
    for i, w in enumerate(words[:-1]):
        if w.lower() not in vocab.AUX:
            continue
        if words[i + 1].lower() in vocab.PRONOUNS:
            # "How can I lose weight" -> "How can I not lose weight"
            spots.append(i + 2)
        elif i > 0 and words[i - 1].lower() not in vocab.WH:
            # "X is good" -> "X is not good" (not "Is not X good")
            spots.append(i + 1)
    if not spots:
        return None
    i = rng.choice(spots)
    return " ".join([*words[:i], "not", *words[i:]])


def _antonym(text: str, rng: random.Random) -> str | None:
    found = _find_phrases(text, vocab.ANTONYM_OF)
    if not found:
        return None
    word = rng.choice(found)
    return _sub_phrase(text, word, vocab.ANTONYM_OF[word])


_DIRECTION = (
    re.compile(
        r"\b(from) ([\w$.+#-]+(?: [\w$+#-]+)?) (to|into) ([\w$.+#-]+(?: [\w$+#-]+)?)", re.IGNORECASE
    ),
    re.compile(
        r"\b(convert|translate|change|switch|migrate|move|transfer|cast) "
        r"([\w$.+#-]+(?: [\w$+#-]+)?) (to|into) ([\w$.+#-]+(?: [\w$+#-]+)?)",
        re.IGNORECASE,
    ),
    re.compile(
        r"\b(how many) ([\w$.-]+(?: [\w$-]+)?) (is|are|in|make|makes) "
        r"(\d[\d,.]* [\w$-]+(?: [\w$-]+)?)",
        re.IGNORECASE,
    ),
)


def _direction(text: str, rng: random.Random) -> str | None:
    for pattern in _DIRECTION:
        m = pattern.search(text)
        if m is None:
            continue
        head, x, link, y = m.groups()
        if pattern is _DIRECTION[2]:
            # "how many dollars is 100 euros" -> "how many euros is 100 dollars"
            number, _, unit_y = y.partition(" ")
            swapped = f"{head} {unit_y} {link} {number} {x}"
        else:
            swapped = f"{head} {y} {link} {x}"
        if x.lower() == y.lower():
            return None
        return text[: m.start()] + swapped + text[m.end() :]
    # Two entities of one kind: swap them ("Python to Java" style relations).
    words = [m for m in _WORD.finditer(text) if m.group(0).lower() in vocab.ENTITY_OF]
    for i, a in enumerate(words):
        for b in words[i + 1 :]:
            if vocab.ENTITY_OF[a.group(0).lower()] is vocab.ENTITY_OF[b.group(0).lower()]:
                between = text[a.end() : b.start()].lower()
                if re.search(r"\b(to|than|into|over|instead of|from)\b", between):
                    return (
                        text[: a.start()]
                        + b.group(0)
                        + text[a.end() : b.start()]
                        + a.group(0)
                        + text[b.end() :]
                    )
    return None


def _entity(text: str, rng: random.Random) -> str | None:
    found = [m for m in _WORD.finditer(text) if m.group(0).lower() in vocab.ENTITY_OF]
    if not found:
        return None
    m = rng.choice(found)
    group = vocab.ENTITY_OF[m.group(0).lower()]
    choices = [
        e for e in group if e.lower() != m.group(0).lower() and e.lower() not in text.lower()
    ]
    if not choices:
        return None
    return text[: m.start()] + rng.choice(choices) + text[m.end() :]


def _with_tail(text: str, tail: str) -> str:
    stripped = text.rstrip()
    end = ""
    while stripped and stripped[-1] in "?.!":
        end = stripped[-1] + end
        stripped = stripped[:-1]
    return f"{stripped} {tail}{end}"


def _constraint(text: str, rng: random.Random) -> str | None:
    if len(text) > 160:
        return None
    options = [c for c in vocab.CONSTRAINTS if c.split()[-1].lower() not in text.lower()]
    return _with_tail(text, rng.choice(options))


def _scope(text: str, rng: random.Random) -> str | None:
    for group in vocab.SCOPES:
        found = _find_phrases(text, group)
        if found:
            old = found[0]
            return _sub_phrase(text, old, rng.choice([g for g in group if g != old]))
    if len(text) > 160:
        return None
    group = rng.choice(vocab.SCOPES)
    return _with_tail(text, rng.choice(group))


# -- positives ------------------------------------------------------------------------------

_KEYS = "qwertyuiop asdfghjkl zxcvbnm"


def _typo_word(word: str, rng: random.Random) -> str:
    if len(word) < 4:
        return word
    i = rng.randrange(1, len(word) - 1)
    op = rng.randrange(4)
    if op == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if op == 1:
        return word[:i] + word[i + 1 :]
    if op == 2:
        return word[:i] + word[i] + word[i:]
    row = next((r for r in _KEYS.split() if word[i].lower() in r), None)
    if row is None:
        return word
    j = row.index(word[i].lower())
    near = row[max(0, j - 1) : j + 2].replace(word[i].lower(), "") or word[i]
    return word[:i] + rng.choice(near) + word[i + 1 :]


def _typo(text: str, rng: random.Random) -> str | None:
    words = text.split()
    long_words = [i for i, w in enumerate(words) if len(w) >= 4 and not any(c.isdigit() for c in w)]
    if not long_words:
        return None
    for i in rng.sample(long_words, min(len(long_words), rng.choice((1, 1, 2, 3)))):
        words[i] = _typo_word(words[i], rng)
    out = " ".join(words)
    if rng.random() < 0.4:
        out = out.lower()
    if rng.random() < 0.4:
        out = out.rstrip("?.!")
    return out if out != text else None


def _synonym_using(
    synonym_of: dict[str, tuple[str, ...]],
) -> Callable[[str, random.Random], str | None]:
    def synonym(text: str, rng: random.Random) -> str | None:
        found = _find_phrases(text, synonym_of)
        if not found:
            return None
        out = text
        for word in rng.sample(found, min(len(found), rng.choice((1, 2, 3)))):
            group = synonym_of[word]
            out = _sub_phrase(out, word, rng.choice([g for g in group if g != word]))
        return out if out != text else None

    return synonym


_synonym = _synonym_using(vocab.SYNONYM_OF)


def _verbose(text: str, rng: random.Random) -> str | None:
    body = text.strip()
    prefix = rng.choice(vocab.PREFIXES)
    if prefix.endswith(": ") or prefix.endswith("? ") or prefix.endswith(". "):
        core = body
    else:
        core = body[:1].lower() + body[1:]
    return prefix + core + rng.choice(vocab.SUFFIXES)


def _terse(text: str, rng: random.Random) -> str | None:
    words = [w.strip("?.!,;:") for w in text.split()]
    kept = [w for w in words if w and w.lower() not in vocab.STOP]
    if len(kept) < 2 or len(kept) == len(words):
        return None
    out = " ".join(kept)
    return out.lower() if rng.random() < 0.6 else out


_TAIL = re.compile(r"^(.*\w) ((?:in|on|for|during|with|at|as|using|after|before) [^,?]+?)([?.!]?)$")


def _reorder(text: str, rng: random.Random) -> str | None:
    m = re.search(r"\b([\w+#-]+) (and|or|vs\.?|versus) ([\w+#-]+)\b", text)
    if m and rng.random() < 0.5 and m.group(1).lower() not in vocab.STOP | {"between"}:
        return text[: m.start()] + f"{m.group(3)} {m.group(2)} {m.group(1)}" + text[m.end() :]
    t = _TAIL.match(text.strip())
    if t is None:
        return None
    body, tail, end = t.groups()
    if len(tail.split()) > 6:
        return None
    return f"{tail[:1].upper()}{tail[1:]}, {body[:1].lower()}{body[1:]}{end or '?'}"


def _style(text: str, rng: random.Random) -> str | None:
    out = text
    for full, short in vocab.CONTRACTIONS:
        old, new = (full, short) if rng.random() < 0.5 else (short, full)
        out = _sub_phrase(out, old, new)
    choice = rng.randrange(3)
    if choice == 0:
        out = out.lower()
    elif choice == 1:
        out = out.rstrip("?.!") + rng.choice(("", "??", " ?", "."))
    else:
        out = re.sub(r"[,;:]", "", out)
    return out if out != text else None


# -- version 2 additions (``generate(..., version=2)``) ----------------------------------------

_NEGATED = re.compile(r"\b(not|no|never|without)\b|n't\b", re.IGNORECASE)
_COMPARATIVE = (
    r"bigger|larger|smaller|better|worse|faster|slower|older|younger|taller|shorter|cheaper|"
    r"heavier|lighter|stronger|weaker|safer|healthier|harder|easier|richer|more \w+|less \w+"
)
_DIRECTION_V2 = (
    # "how many cm are in an inch" -> "how many inches are in a cm"
    re.compile(r"\b(how many) ([\w-]+) (is|are) (in) (a|an|one) ([\w-]+)", re.IGNORECASE),
    # "miles per gallon" -> "gallons per mile" (kept simple: the two words swap)
    re.compile(r"\b([\w-]+) (per) ([\w-]+)", re.IGNORECASE),
    # "Is X bigger than Y" -> "Is Y bigger than X"
    re.compile(
        r"\b(is|are|was|were) ([\w+#.-]+) (" + _COMPARATIVE + r") than ([\w+#.-]+)",
        re.IGNORECASE,
    ),
    re.compile(
        r"\b(port|map|send|copy|sync|export|import|upgrade|cast|fly|drive|switch) "
        r"(?:from )?([\w$.+#-]+) (to|into) ([\w$.+#-]+)",
        re.IGNORECASE,
    ),
)


def _direction_v2(text: str, rng: random.Random) -> str | None:
    for i, pattern in enumerate(_DIRECTION_V2):
        m = pattern.search(text)
        if m is None:
            continue
        g = m.groups()
        if i == 0:
            head, x, verb, prep, _, y = g
            art = "an" if y[:1].lower() in "aeiou" else "a"
            swapped = f"{head} {y} {verb} {prep} {art} {x}"
        elif i == 1:
            x, per, y = g
            if x.lower() in vocab.STOP or y.lower() in vocab.STOP or x.isdigit() or y.isdigit():
                continue
            swapped = f"{y} {per} {x}"
        elif i == 2:
            verb, x, comp, y = g
            swapped = f"{verb} {y} {comp} than {x}"
        else:
            verb, x, _, y = g
            swapped = m.group(0).replace(x, "\0").replace(y, x).replace("\0", y)
        if x.lower() == y.lower():
            continue
        return text[: m.start()] + swapped + text[m.end() :]
    return _direction(text, rng)


def _antonym_v2(text: str, rng: random.Random) -> str | None:
    # "not safe" -> "not dangerous" would say the same thing twice negated: skip.
    return None if _NEGATED.search(text) else _antonym(text, rng)


# -- version 3 additions (``generate(..., version=3)``) ----------------------------------------
# Issue 5: the verifier read most word substitutions as a changed question ("cheapest" ->
# "most affordable" scored like an antonym), because the only substitutions it saw often were
# negatives. Version 3 draws from a lexicon ten times larger (``synthetic_lexicon``) on both
# sides: synonyms for positives, antonyms and related-but-different words for negatives.


def _replace_using(
    table: dict[str, tuple[str, ...]],
) -> Callable[[str, random.Random], str | None]:
    def replace(text: str, rng: random.Random) -> str | None:
        found = _find_phrases(text, table)
        low = text.lower()
        choices = [(w, [g for g in table[w] if g != w and g.lower() not in low]) for w in found]
        choices = [(w, options) for w, options in choices if options]
        if not choices:
            return None
        word, options = rng.choice(choices)
        return _sub_phrase(text, word, rng.choice(options))

    return replace


def _synonym_v3(text: str, rng: random.Random) -> str | None:
    return _synonym_using(lexicon().synonym_of)(text, rng)


def _antonym_v3(text: str, rng: random.Random) -> str | None:
    return None if _NEGATED.search(text) else _replace_using(lexicon().antonym_of)(text, rng)


def _entity_v3(text: str, rng: random.Random) -> str | None:
    contrast = _replace_using(lexicon().contrast_of)
    first, second = (_entity, contrast) if rng.random() < 0.5 else (contrast, _entity)
    return first(text, rng) or second(text, rng)


_NEGATIVE: dict[str, Edit] = {
    "number": _number,
    "negation": _negation,
    "antonym": _antonym,
    "direction": _direction,
    "entity": _entity,
    "constraint": _constraint,
    "scope": _scope,
}
_NEGATIVE_V2 = {**_NEGATIVE, "direction": _direction_v2, "antonym": _antonym_v2}
_POSITIVE: dict[str, Edit] = {
    "typo": _typo,
    "synonym": _synonym,
    "verbose": _verbose,
    "terse": _terse,
    "reorder": _reorder,
    "style": _style,
}
_NEGATIVE_V3 = {**_NEGATIVE_V2, "antonym": _antonym_v3, "entity": _entity_v3}
_POSITIVE_V3 = {**_POSITIVE, "synonym": _synonym_v3}

# Version 3 tries these kinds first when they apply, so substitutions are common on both sides.
PREFERRED_V3 = {"synonym": 0.4, "antonym": 0.3, "entity": 0.3}


def edits(version: int) -> tuple[dict[str, Edit], dict[str, Edit]]:
    """The (negative, positive) edit of each kind in generator ``version``."""
    negative = _NEGATIVE_V3 if version >= 3 else _NEGATIVE_V2 if version >= 2 else _NEGATIVE
    return negative, _POSITIVE_V3 if version >= 3 else _POSITIVE
