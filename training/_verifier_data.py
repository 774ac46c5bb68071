"""The verifier's training pairs and held-out groups (used by ``train_verifier.py``).

See ``train_verifier.py``'s docstring for what each source is and which stage used it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _neighbours import neighbour_negatives
from _qqp_closure import closure_pairs
from synthetic import generate

from semcache.bench import datasets as ds

__all__ = ["EXTRA", "build_data"]

EXTRA = Path(__file__).resolve().parent / "data" / "train_extra.jsonl"


def _hash(pairs: list[ds.LabelledPair]) -> str:
    h = hashlib.sha256()
    for p in pairs:
        h.update(f"{p.a}\t{p.b}\t{p.label}\n".encode())
    return h.hexdigest()[:16]


def build_data(
    data_dir: Path,
    seed: int,
    synth_qqp: int,
    qqp_cap: int,
    *,
    qqp_start: int = 0,
    replay: int = 0,
    data_seed: int | None = None,
    synth_version: int = 1,
    extra_files: Sequence[Path] = (EXTRA,),
    neighbours_train: int = 0,
    neighbours_heldout: int = 0,
    closure: int = 0,
    synth_start: int | None = None,
) -> tuple[list[ds.LabelledPair], dict[str, Any]]:
    """The training pairs and the held-out groups, QQP read from the shared folder ``data_dir``.

    ``seed`` fixes the held-out split (always the same 10% for seed 0); ``data_seed`` (default
    ``seed``) the synthetic pairs and the order. A later stage takes the QQP training pairs from
    ``qqp_start`` on, plus ``replay`` pairs drawn from before it, and synthetic pairs from
    other source questions.
    """
    ds_seed = seed if data_seed is None else data_seed
    full = ds.shared_set_path("qqp-full", data_dir)
    test = ds.shared_set_path("qqp-test", data_dir)
    qqp = ds.training_pairs(full, test)
    order = list(range(len(qqp)))
    random.Random(seed).shuffle(order)
    n_dev = len(qqp) // 10
    dev_idx = set(order[:n_dev])
    pool = [qqp[i] for i in order[n_dev:]]
    qqp_train = pool[qqp_start:][: qqp_cap or None]
    if replay and qqp_start:
        qqp_train += random.Random(ds_seed + 11).sample(pool[:qqp_start], replay)
    qqp_dev = [p for i, p in enumerate(qqp) if i in dev_idx]
    # Pairs implied by the training pairs (``_qqp_closure``), never an evaluation pair.
    closure_train: list[ds.LabelledPair] = []
    if closure:
        evaluation_keys = {ds.pair_key(p.a, p.b) for p in qqp_dev + ds.load_qqp_csv(test)}
        closure_train = closure_pairs(
            pool, evaluation_keys, positives=closure, negatives=closure // 3, seed=ds_seed + 12
        )
    dev_questions = {q for p in qqp_dev for q in (p.a, p.b)}

    extra = [p for path in extra_files for p in ds.read_pairs_jsonl(path)]
    extra_dev = [p for p in extra if int((p.id or "0").split("-")[-1]) % 5 == 0]
    extra_train = [p for p in extra if p not in extra_dev]

    # Synthetic pairs: sources are distinct questions of each side; dev sources never train.
    train_q = sorted({q for i in order[n_dev:] for q in (qqp[i].a, qqp[i].b)} - dev_questions)
    random.Random(seed + 1).shuffle(train_q)
    # Sources for a later stage's synthetic pairs follow those of the earlier ones, until they
    # run out (stage 8 got none); ``synth_start`` starts again elsewhere (stage 9: from 0, with
    # generator version 3 and a new seed, so the pairs differ from stage 1's).
    q_from = (ds_seed - seed) * synth_qqp if synth_start is None else synth_start
    dev_q = sorted(dev_questions)
    random.Random(seed + 2).shuffle(dev_q)
    syn_qqp_train = generate(
        train_q[q_from : q_from + synth_qqp],
        seed=ds_seed + 3,
        per_source=1,
        tag="sq",
        version=synth_version,
    )
    syn_qqp_dev = generate(dev_q[: max(1, synth_qqp // 10)], seed=seed + 4, per_source=1, tag="sqd")
    extra_train_q = sorted({q for p in extra_train for q in (p.a, p.b)})
    extra_dev_q = sorted({q for p in extra_dev for q in (p.a, p.b)} - set(extra_train_q))
    syn_extra_train = generate(
        extra_train_q, seed=ds_seed + 5, per_source=8, tag="sx", version=synth_version
    )
    syn_extra_dev = generate(extra_dev_q, seed=seed + 6, per_source=8, tag="sxd")

    # Nearest-neighbour negatives (``_neighbours``): training ones among a sample of the
    # training-side questions, held-out ones among held-out questions only.
    nb_count = min(len(train_q), 3 * neighbours_train)
    nb_sources = random.Random(ds_seed + 10).sample(train_q, nb_count)
    nb_train = neighbour_negatives(
        nb_sources + extra_train_q, qqp, neighbours_train, seed=ds_seed + 8, tag="nb"
    )
    nb_dev = neighbour_negatives(
        dev_q + extra_dev_q, qqp + extra, neighbours_heldout, seed=seed + 9, tag="nbd"
    )
    train = qqp_train + syn_qqp_train + syn_extra_train + extra_train * 4 + nb_train
    train += closure_train
    rng = random.Random(ds_seed + 7)
    # Either order: the cache stores whichever query came first.
    train = [
        ds.LabelledPair(p.b, p.a, p.label, p.kind, p.id) if rng.random() < 0.5 else p for p in train
    ]
    rng.shuffle(train)
    dev = {
        "qqp": qqp_dev,
        "synthetic-qqp": syn_qqp_dev,
        "llm": extra_dev + syn_extra_dev,
    }
    if nb_dev:
        dev["neighbours"] = nb_dev
    info = {
        "qqp_training_split": len(qqp),
        "qqp_train": len(qqp_train),
        "qqp_start": qqp_start,
        "qqp_replay": replay,
        "data_seed": ds_seed,
        "synthetic_version": synth_version,
        "synthetic_start": q_from,
        "qqp_heldout": len(qqp_dev),
        "synthetic_from_qqp_train": len(syn_qqp_train),
        "synthetic_from_handwritten_train": len(syn_extra_train),
        "handwritten_train": len(extra_train),
        "handwritten_train_oversampling": 4,
        "neighbour_negatives_train": len(nb_train),
        "closure_train": len(closure_train),
        "train_examples": len(train),
        "train_positive_share": round(sum(p.label for p in train) / len(train), 4),
        "heldout": {k: {"n": len(v), "pos": sum(p.label for p in v)} for k, v in dev.items()},
        "sha256_16": {
            "train": _hash(train),
            **{f"heldout_{k}": _hash(v) for k, v in dev.items()},
            **{
                ("train_extra_file" if path == EXTRA else f"extra_{path.name}"): hashlib.sha256(
                    path.read_bytes()
                ).hexdigest()[:16]
                for path in extra_files
            },
        },
    }
    return train, {"groups": dev, "info": info}
