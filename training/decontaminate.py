"""Drop hand-written training pairs that come close to any evaluation sentence (issue 5).

Run from the repository root:

    .venv/bin/python training/decontaminate.py --shared-data ../shared/data \
        DRAFT.jsonl [DRAFT.jsonl ...] --out OUT.jsonl

A pair is dropped when either side equals an evaluation sentence after ``normalize_query``
(case, punctuation, spacing) or has a MiniLM cosine of at least ``--max-cosine`` (0.9) to one.
The evaluation sentences: ``benchmarks/data/hard_pairs.jsonl``, QQP ``test.csv``, STS-B test
(every row), the MeanCache contextual queries, the GPTCache mock data and the arena prompts.
A pair that repeats an earlier pair (either order, after normalisation), here or in
``--against`` files (default: the hand-written training files already in the repo), is dropped
too. ``--shared-data DIR`` is the shared data folder (default ``$SEMCACHE_SHARED_DATA``, else an
error). Prints the counts; the kept pairs are written in input order.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from semcache.bench import datasets as ds  # noqa: E402
from semcache.cache.verifier import normalize_query  # noqa: E402
from semcache.embed import Encoder  # noqa: E402

HARD_PAIRS = REPO / "benchmarks" / "data" / "hard_pairs.jsonl"
TRAINING_FILES = (
    REPO / "training" / "data" / "train_extra.jsonl",
    REPO / "training" / "data" / "train_extra_2.jsonl",
)


def evaluation_sentences(data_dir: Path) -> list[str]:
    """Every sentence of every evaluation set (FileNotFoundError if a shared file is absent)."""

    def shared(name: str) -> Path:
        return ds.shared_set_path(name, data_dir)

    pairs = [
        *ds.read_pairs_jsonl(HARD_PAIRS),
        *ds.load_qqp_csv(shared("qqp-test")),
        *ds.load_stsb(shared("stsb-test"), hit_at=0.0, miss_at=-1.0),
        *ds.load_gptcache_mock(shared("gptcache-mock")),
    ]
    out = {s for p in pairs for s in (p.a, p.b)}
    for case in ds.load_contextual_queries(shared("contextual-queries")):
        out |= {str(m["content"]) for m in case.cached + case.new}
    out |= set(ds.load_arena_prompts(shared("arena-prompts")))
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("drafts", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-cosine", type=float, default=0.9)
    parser.add_argument("--against", type=Path, action="append", default=None)
    ds.add_shared_data_option(parser)
    args = parser.parse_args(argv)
    data_dir = ds.shared_data_option(parser, args)

    evaluation = evaluation_sentences(data_dir)
    normalized = {normalize_query(s) for s in evaluation}
    encoder = Encoder(precision="fp32")  # as the committed files were checked
    eval_vectors = encoder.encode(evaluation)
    seen = {
        tuple(sorted((normalize_query(p.a), normalize_query(p.b))))
        for path in args.against or TRAINING_FILES
        for p in ds.read_pairs_jsonl(path)
    }
    rows = [json.loads(line) for path in args.drafts for line in path.open() if line.strip()]
    sides = [s for r in rows for s in (r["a"], r["b"])]
    vectors = encoder.encode(sides)
    nearest = np.concatenate(
        [(vectors[i : i + 512] @ eval_vectors.T).max(1) for i in range(0, len(sides), 512)]
    )
    kept, dropped = [], {"close to evaluation": 0, "equal to evaluation": 0, "repeat": 0}
    for i, row in enumerate(rows):
        key = tuple(sorted((normalize_query(row["a"]), normalize_query(row["b"]))))
        if key[0] in normalized or key[1] in normalized:
            dropped["equal to evaluation"] += 1
        elif max(nearest[2 * i], nearest[2 * i + 1]) >= args.max_cosine:
            dropped["close to evaluation"] += 1
        elif key in seen or key[0] == key[1]:
            dropped["repeat"] += 1
        else:
            seen.add(key)
            kept.append(row)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    print(json.dumps({"drafts": len(rows), "kept": len(kept), "dropped": dropped}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
