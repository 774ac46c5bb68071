"""Dataset loaders for measuring hit quality.

Every labelled set becomes a list of ``LabelledPair`` (cached query ``a``, new query ``b``,
``label`` 1 when the answer cached for ``a`` also answers ``b``) or ``ContextCase`` (a cached
conversation, a new one, and the same label). The JSONL formats are the ones in docs/ARCHITECTURE.md
("Measuring hit quality"):

    pairs:          {"a": str, "b": str, "label": 0|1, "id"?: str, "kind"?: str}
    context cases:  {"cached": [chat messages], "new": [chat messages], "label": 0|1, ...}

The shared files live in a folder given explicitly (``--shared-data DIR`` or
``$SEMCACHE_SHARED_DATA``; ``shared_data_dir`` in ``shared_data.py``), never found relative to
this package; they are read in place and never copied into the repository. Only
``training_pairs`` (GPTCache's full QQP file minus every MeanCache test pair) may be used for
training or threshold tuning; everything else, including the repository's
``benchmarks/data/hard_pairs.jsonl``, is evaluation data.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .pairs import (
    ContextCase,
    LabelledPair,
    PathLike,
    check_label,
    jsonl_objects,
    location,
    read_context_cases_jsonl,
    read_pairs_jsonl,
    write_context_cases_jsonl,
    write_pairs_jsonl,
)
from .shared_data import (
    SHARED_DATA_ENV,
    SHARED_SETS,
    add_shared_data_option,
    shared_data_dir,
    shared_data_option,
    shared_set_path,
)

__all__ = [
    "CONVERT_SOURCES",
    "PAIR_FORMATS",
    "SHARED_DATA_ENV",
    "SHARED_SETS",
    "ContextCase",
    "LabelledPair",
    "add_shared_data_option",
    "convert_to_pairs",
    "detect_pair_format",
    "load_arena_hard_pairs",
    "load_arena_prompts",
    "load_contextual_queries",
    "load_gptcache_mock",
    "load_gptcache_qqp_tar",
    "load_qqp_csv",
    "load_stsb",
    "pair_key",
    "read_context_cases_jsonl",
    "read_pairs",
    "read_pairs_jsonl",
    "shared_data_dir",
    "shared_data_option",
    "shared_set_path",
    "training_pairs",
    "write_context_cases_jsonl",
    "write_pairs_jsonl",
]

CONVERT_SOURCES = ("qqp-csv", "gptcache-mock", "gptcache-tar", "stsb", "arena-hard")


# ---------------------------------------------------------------------------------------------
# Public data sets


def load_qqp_csv(path: PathLike) -> list[LabelledPair]:
    """Read MeanCache's QQP ``test.csv`` (header question1,question2,is_duplicate)."""
    pairs: list[LabelledPair] = []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        columns = set(reader.fieldnames or ())
        missing = {"question1", "question2", "is_duplicate"} - columns
        if missing:
            raise ValueError(f"{location(path)}: missing column(s) {', '.join(sorted(missing))}")
        for row in reader:
            where = location(path, reader.line_num)
            raw = (row.get("is_duplicate") or "").strip()
            if raw not in ("0", "1"):
                raise ValueError(f"{where}: is_duplicate must be 0 or 1, got {raw!r}")
            a, b = row.get("question1"), row.get("question2")
            if a is None or b is None:
                raise ValueError(f"{where}: row has too few columns")
            pairs.append(LabelledPair(a=a, b=b, label=int(raw), id=f"qqp-{len(pairs) + 1}"))
    return pairs


def _origin_similar(rows: Any, where: str, id_prefix: str) -> list[LabelledPair]:
    """Turn a JSON list of ``{"origin", "similar"}`` objects into positive pairs."""
    if not isinstance(rows, list):
        raise ValueError(f"{where}: expected a JSON list of {{origin, similar}} objects")
    pairs: list[LabelledPair] = []
    for i, row in enumerate(rows):
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("origin"), str)
            or not isinstance(row.get("similar"), str)
        ):
            raise ValueError(f"{where}: item {i} is not an object with string origin/similar")
        pairs.append(
            LabelledPair(a=row["origin"], b=row["similar"], label=1, id=f"{id_prefix}-{i + 1}")
        )
    return pairs


def load_gptcache_mock(path: PathLike) -> list[LabelledPair]:
    """Read GPTCache's ``mock_data.json`` (a list of {origin, similar}) as positive pairs."""
    with open(path, encoding="utf-8") as fh:
        rows = json.load(fh)
    return _origin_similar(rows, location(path), "mock")


def _read_json_member(path: PathLike) -> Any:
    """Parse the single JSON member of a (gzipped) TAR archive, or a plain gzipped JSON file."""
    where = location(path)
    if not tarfile.is_tarfile(path):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return json.load(fh)
    with tarfile.open(path, "r:*") as archive:
        members = [
            m for m in archive.getmembers() if m.isfile() and not Path(m.name).name.startswith("._")
        ]
        if len(members) != 1:
            names = ", ".join(m.name for m in members) or "none"
            raise ValueError(f"{where}: expected one JSON member in the archive, found {names}")
        member = archive.extractfile(members[0])
        if member is None:
            raise ValueError(f"{where}: cannot read archive member {members[0].name}")
        with member:
            try:
                return json.load(member)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: {members[0].name} is not valid JSON") from exc


def load_gptcache_qqp_tar(path: PathLike) -> list[LabelledPair]:
    """Read a GPTCache QQP ``.json.gz`` (TAR of {text_a,text_b,label} or {origin,similar} rows)."""
    where = location(path)
    rows = _read_json_member(path)
    if not isinstance(rows, list):
        raise ValueError(f"{where}: expected a JSON list")
    if rows and isinstance(rows[0], dict) and "origin" in rows[0]:
        return _origin_similar(rows, where, "qqp")
    pairs: list[LabelledPair] = []
    for i, row in enumerate(rows):
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("text_a"), str)
            or not isinstance(row.get("text_b"), str)
        ):
            raise ValueError(f"{where}: item {i} is not an object with string text_a/text_b")
        label = check_label(row.get("label"), f"{where}: item {i}")
        pairs.append(LabelledPair(a=row["text_a"], b=row["text_b"], label=label, id=f"qqp-{i + 1}"))
    return pairs


def load_stsb(path: PathLike, hit_at: float = 4.0, miss_at: float = 2.0) -> list[LabelledPair]:
    """Read STS-B (TAB-separated, no header): >= hit_at -> 1, <= miss_at -> 0, kind = genre."""
    if not miss_at < hit_at:
        raise ValueError(f"miss_at ({miss_at}) must be below hit_at ({hit_at})")
    pairs: list[LabelledPair] = []
    # newline="" keeps a stray \r inside a field from splitting a row; csv quoting is never used.
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) < 7:
                raise ValueError(f"{location(path, lineno)}: expected >= 7 TAB-separated columns")
            try:
                score = float(cols[4])
            except ValueError as exc:
                raise ValueError(f"{location(path, lineno)}: bad score {cols[4]!r}") from exc
            if score >= hit_at:
                label = 1
            elif score <= miss_at:
                label = 0
            else:
                continue
            pairs.append(
                LabelledPair(a=cols[5], b=cols[6], label=label, kind=cols[0], id=f"stsb-{lineno}")
            )
    return pairs


def load_contextual_queries(path: PathLike, *, other_context: bool = False) -> list[ContextCase]:
    """Read MeanCache ``contextual_queries.json`` as label-0 context cases (one per follow-up).

    The follow-up is always asked inside its own conversation:
    ``new = [user: Main Query, assistant: Main Query Response, user: Follow-Up Query]``.

    * kind ``followup_vs_main`` (always, one per item): ``cached`` is the main query stored as a
      standalone single-turn conversation ``[user: Main Query]``. The follow-up is topically
      close to its main query but asks something else, so the stored answer must not be
      served; this is the MeanCache experiment.
    * kind ``followup_other_context`` (only with ``other_context=True``, one per item):
      ``cached`` is the *same* follow-up text asked after a different item's main query and
      response (the item half the list away whose main query differs). The semantic text is
      identical and only the context differs, so this is the strongest check that a hit needs
      equal context hashes (docs/ARCHITECTURE.md, "Keys": "how old is he?" in two
      conversations never match). Its label is the design rule's "must miss", not a
      judgement of the answer: for self-contained follow-ups ("Can you name one primary
      color?") the stored answer would in fact fit.

    Standalone follow-ups (``cached = [user: Follow-Up Query]``) are not produced: they test
    the same rule as ``followup_other_context`` with a weaker semantic match.

    Label noise: a few follow-ups restate their main query ("Who painted the Mona Lisa?" /
    "Who is the artist behind the Mona Lisa?"), where the main query's answer does fit; they
    are kept as label 0, as MeanCache uses them.
    """
    where = location(path)
    with open(path, encoding="utf-8") as fh:
        items = json.load(fh)
    if not isinstance(items, list):
        raise ValueError(f"{where}: expected a JSON list")
    keys = ("Main Query", "Main Query Response", "Follow-Up Query")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or any(not isinstance(item.get(k), str) for k in keys):
            raise ValueError(f"{where}: item {i} lacks string fields {', '.join(keys)}")

    def conversation(item: Mapping[str, str], follow_up: str) -> list[dict[str, Any]]:
        """Main query, its response, then ``follow_up`` as the last user turn."""
        return [
            {"role": "user", "content": item["Main Query"]},
            {"role": "assistant", "content": item["Main Query Response"]},
            {"role": "user", "content": follow_up},
        ]

    cases: list[ContextCase] = []
    for i, item in enumerate(items):
        cases.append(
            ContextCase(
                cached=[{"role": "user", "content": item["Main Query"]}],
                new=conversation(item, item["Follow-Up Query"]),
                label=0,
                kind="followup_vs_main",
                id=f"ctx-{i + 1}-main",
            )
        )
    if other_context:
        n = len(items)
        for i, item in enumerate(items):
            partner = next(
                (
                    items[(i + n // 2 + step) % n]
                    for step in range(n)
                    if items[(i + n // 2 + step) % n]["Main Query"] != item["Main Query"]
                ),
                None,
            )
            if partner is None:
                continue
            cases.append(
                ContextCase(
                    cached=conversation(partner, item["Follow-Up Query"]),
                    new=conversation(item, item["Follow-Up Query"]),
                    label=0,
                    kind="followup_other_context",
                    id=f"ctx-{i + 1}-other",
                )
            )
    return cases


def load_arena_prompts(path: PathLike) -> list[str]:
    """Read Chatbot Arena ``prompts.jsonl`` as prompt texts in arrival (file) order."""
    prompts: list[str] = []
    for lineno, obj in jsonl_objects(path):
        prompt = obj.get("prompt")
        if not isinstance(prompt, str):
            raise ValueError(f"{location(path, lineno)}: missing string field 'prompt'")
        prompts.append(prompt)
    return prompts


def load_arena_hard_pairs(path: PathLike) -> list[LabelledPair]:
    """Read Arena-Hard ``question.jsonl``; every same-cluster pair is a label-0 ``topical`` pair."""
    clusters: dict[str, list[tuple[str, str]]] = {}
    for lineno, obj in jsonl_objects(path):
        where = location(path, lineno)
        cluster, turns = obj.get("cluster"), obj.get("turns")
        if not isinstance(cluster, str) or not isinstance(turns, list) or not turns:
            raise ValueError(f"{where}: needs a string 'cluster' and a non-empty 'turns' list")
        first = turns[0]
        if not isinstance(first, dict) or not isinstance(first.get("content"), str):
            raise ValueError(f"{where}: turns[0] has no string 'content'")
        qid = str(obj.get("question_id", lineno))
        clusters.setdefault(cluster, []).append((qid, first["content"]))
    pairs: list[LabelledPair] = []
    for members in clusters.values():
        for (id_a, text_a), (id_b, text_b) in itertools.combinations(members, 2):
            pairs.append(
                LabelledPair(a=text_a, b=text_b, label=0, kind="topical", id=f"{id_a}:{id_b}")
            )
    return pairs


# ---------------------------------------------------------------------------------------------
# Training split


def pair_key(a: str, b: str) -> tuple[str, str]:
    """Order-free key of a pair after whitespace normalisation."""
    na, nb = " ".join(a.split()), " ".join(b.split())
    return (na, nb) if na <= nb else (nb, na)


def training_pairs(qqp_full_path: PathLike, test_csv_path: PathLike) -> list[LabelledPair]:
    """GPTCache's full QQP pairs minus every MeanCache test pair (unordered), in file order."""
    held_out = {pair_key(p.a, p.b) for p in load_qqp_csv(test_csv_path)}
    return [p for p in load_gptcache_qqp_tar(qqp_full_path) if pair_key(p.a, p.b) not in held_out]


# ---------------------------------------------------------------------------------------------
# CLI hook


def _converters() -> dict[str, Callable[[PathLike], list[LabelledPair]]]:
    """The loaders ``convert_to_pairs`` dispatches to, by source name."""
    return {
        "qqp-csv": load_qqp_csv,
        "gptcache-mock": load_gptcache_mock,
        "gptcache-tar": load_gptcache_qqp_tar,
        "stsb": load_stsb,
        "arena-hard": load_arena_hard_pairs,
    }


PAIR_FORMATS = ("jsonl", *CONVERT_SOURCES)


def detect_pair_format(path: Path) -> str:
    """The format of a labelled-pair file from its name and first line: pair JSONL, QQP csv
    (a question1,question2,is_duplicate header), STS-B (tab-separated), GPTCache's mock JSON
    or its QQP tarball."""
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz", ".json.gz")):
        return "gptcache-tar"
    if name.endswith(".json"):
        return "gptcache-mock"
    if name.endswith((".csv", ".tsv")):
        with open(path, encoding="utf-8", errors="replace") as fh:
            first = fh.readline()
        if "\t" in first:
            return "stsb"
        if "question1" in first and "is_duplicate" in first:
            return "qqp-csv"
        raise ValueError(
            f"{path}: a .csv that is neither QQP (question1,question2,is_duplicate) nor STS-B "
            "(tab-separated); name the format with --format"
        )
    return "jsonl"


def read_pairs(path: Path, fmt: str | None = None) -> list[LabelledPair]:
    """Labelled pairs from any supported file, the format named or detected."""
    fmt = fmt or detect_pair_format(path)
    if fmt == "jsonl":
        return read_pairs_jsonl(path)
    converters = _converters()
    if fmt not in converters:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(PAIR_FORMATS)}")
    return converters[fmt](path)


def convert_to_pairs(source: str, path: Path, out: Path) -> int:
    """Convert a public data set to labelled-pair JSONL at ``out``; return the pair count."""
    converters = _converters()
    if source not in converters:
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(CONVERT_SOURCES)}")
    return write_pairs_jsonl(converters[source](path), out)
