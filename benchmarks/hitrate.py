"""Hit quality of cosine similarity alone on every labelled set (issue 5, items 1 and 4).

Run from the repository root (about 5 minutes on 2 idle CPU cores, more under load):

    .venv/bin/python benchmarks/hitrate.py --shared-data ../shared/data

Options: ``--shared-data DIR`` (the shared data folder; default ``$SEMCACHE_SHARED_DATA``, else
an error), ``--out``
(default ``benchmarks/results``), ``--train-sample`` (default 10000; 0 skips calibration),
``--only SET`` (repeatable), ``--no-progress``.

Each set goes through the same code as ``semcache bench hitrate`` (``semcache.bench.hitrate``):
a real ``CacheService`` over ``SqlFaissStore`` with the bundled MiniLM encoder, one partition
per pair, ``a`` stored and ``b`` looked up. Sets:

* ``qqp-test``: MeanCache ``meancache-qqp/test.csv``, 9,042 balanced QQP pairs.
* ``stsb``: STS-B test, score >= 4 -> label 1, <= 2 -> label 0 (in between dropped); kind = genre.
* ``gptcache-mock``: GPTCache ``mock_data.json``, 999 positive pairs (no false-hit rate).
* ``hard-pairs``: ``benchmarks/data/hard_pairs.jsonl``, 386 hand-written pairs with kinds.
* ``contextual``: MeanCache ``contextual_queries.json`` as 256 label-0 context cases
  (follow-up vs its main query; the same follow-up after another conversation).

Calibration (issue 5 item 4): the held-out data is the training split of DESIGN.md (GPTCache's
``similiar_qqp_full`` minus every MeanCache test pair); a fixed-seed subsample of
``--train-sample`` pairs is measured, the lowest 0.01-grid threshold with a false-hit rate
<= 1% is picked (as ``semcache calibrate`` does), and every set is reported at it too.

The service runs with ``hit_decision = cosine`` (the threshold is the whole decision): this is
the baseline the verifier is judged against. The shipped default (``hit_decision = verified``)
is measured by ``eval_verifier.py``.

Writes ``<out>/hitrate-<set>.json`` and ``.png`` per set and the summary ``<out>/hitrate.md``.
A set whose file is absent is skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from semcache.app import hit_decision  # noqa: E402
from semcache.bench import datasets as ds  # noqa: E402
from semcache.bench.hitrate import (  # noqa: E402
    Measurement,
    bench_settings,
    build_report,
    lowest_threshold_within,
    measure,
    rates_at,
    subsample,
)
from semcache.bench.report import format_rate as _pct  # noqa: E402
from semcache.bench.report import format_table, write_plot  # noqa: E402
from semcache.config import Settings  # noqa: E402
from semcache.embed import Encoder  # noqa: E402

CALIBRATION_FHR = 0.01
SEED = 0


@dataclass
class SetSpec:
    name: str
    description: str
    load: Callable[[Path], tuple[list[ds.LabelledPair], list[ds.ContextCase]]]
    shared: str | None  # name in ds.SHARED_SETS, None for the in-repo hard pairs


def _pairs(loader: Callable[[Path], list[ds.LabelledPair]]) -> Any:
    return lambda path: (loader(path), [])


SETS = (
    SetSpec("qqp-test", "MeanCache QQP test.csv", _pairs(ds.load_qqp_csv), "qqp-test"),
    SetSpec("stsb", "STS-B test (>=4 hit, <=2 miss)", _pairs(ds.load_stsb), "stsb-test"),
    SetSpec(
        "gptcache-mock",
        "GPTCache mock_data.json (positives only)",
        _pairs(ds.load_gptcache_mock),
        "gptcache-mock",
    ),
    SetSpec("hard-pairs", "benchmarks/data/hard_pairs.jsonl", _pairs(ds.read_pairs_jsonl), None),
    SetSpec(
        "contextual",
        "MeanCache contextual_queries.json (context cases, must miss)",
        lambda path: ([], ds.load_contextual_queries(path, other_context=True)),
        "contextual-queries",
    ),
)


def _path(spec: SetSpec, data_dir: Path) -> Path:
    if spec.shared is None:
        return REPO / "benchmarks" / "data" / "hard_pairs.jsonl"
    return data_dir / ds.SHARED_SETS[spec.shared]


def _point(report: dict[str, Any], limit: float) -> str:
    if not report["default"]["n_neg"]:
        return "n/a (no label 0)"
    for p in report.get("operating_points", []):
        if p["max_false_hit_rate"] == limit:
            if "recall" not in p:
                return "unreachable"
            return f"{_pct(p['recall'])} (t={p['threshold']:.3f})"
    return "-"


def _calibrate(
    data_dir: Path, sample: int, encoder: Encoder, progress: Any
) -> tuple[dict[str, Any] | None, str]:
    full = data_dir / ds.SHARED_SETS["qqp-full"]
    test = data_dir / ds.SHARED_SETS["qqp-test"]
    if sample <= 0:
        return None, "calibration skipped (--train-sample 0)"
    if not full.is_file() or not test.is_file():
        return None, f"calibration skipped: {full} or {test} is absent"
    train = ds.training_pairs(full, test)
    chosen_pairs = subsample(train, sample, SEED)
    m = measure(chosen_pairs, settings=cosine_settings(), encoder=encoder, progress=progress)
    best = lowest_threshold_within(m.pairs, CALIBRATION_FHR, step=0.01)
    if best is None:
        return None, "calibration found no threshold with FHR <= 1% on the training sample"
    result = {
        "source": "training split: similiar_qqp_full minus meancache-qqp/test.csv",
        "training_pairs": len(train),
        "sample": len(chosen_pairs),
        "seed": SEED,
        "max_false_hit_rate": CALIBRATION_FHR,
        "grid_step": 0.01,
        **best.as_dict(),
        "seconds": round(m.seconds, 1),
    }
    return result, ""


def cosine_settings() -> Settings:
    """The shipped settings with the threshold as the whole decision (no verifier), the
    threshold resolved as the service resolves it (auto: the cosine default)."""
    settings = bench_settings().replace(hit_decision="cosine")
    return settings.replace(threshold=hit_decision(settings)[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ds.add_shared_data_option(parser)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--train-sample", type=int, default=10_000)
    parser.add_argument("--only", action="append", choices=[s.name for s in SETS])
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    data_dir = ds.shared_data_option(parser, args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    progress = None if args.no_progress else sys.stderr
    settings = cosine_settings()
    encoder = Encoder(settings.embedding_model or None)

    reports: dict[str, dict[str, Any]] = {}
    measurements: dict[str, Measurement] = {}
    skipped: list[str] = []
    for spec in SETS:
        if args.only and spec.name not in args.only:
            continue
        path = _path(spec, data_dir)
        if not path.is_file():
            message = f"{spec.name}: skipped, {path} is absent"
            print(message, file=sys.stderr)
            skipped.append(message)
            continue
        pairs, cases = spec.load(path)
        print(f"== {spec.name}: {len(pairs)} pairs, {len(cases)} context cases", file=sys.stderr)
        m = measure(pairs, cases, settings=settings, encoder=encoder, progress=progress)
        report = build_report(
            m,
            dataset={
                "name": spec.name,
                "description": spec.description,
                "source": os.path.relpath(path, REPO),
            },
        )
        print(format_table(report, full_sweep=False))
        print()
        (out / f"hitrate-{spec.name}.json").write_text(
            json.dumps(report, indent=2) + "\n", encoding="utf-8"
        )
        if "sweep" in report:
            write_plot(report, out / f"hitrate-{spec.name}.png")
        reports[spec.name] = report
        measurements[spec.name] = m

    calibration, note = (None, "calibration skipped (--only)")
    if not args.only:
        print("== calibration on the training split", file=sys.stderr)
        calibration, note = _calibrate(data_dir, args.train_sample, encoder, progress)
    if calibration:
        t = calibration["threshold"]
        for name, m in measurements.items():
            at = rates_at(m.pairs, [t])[0] if m.pairs else None
            if at is not None:
                reports[name]["at_calibrated_threshold"] = at.as_dict()
        (out / "hitrate-calibration.json").write_text(
            json.dumps(calibration, indent=2) + "\n", encoding="utf-8"
        )
    (out / "hitrate.md").write_text(
        _markdown(reports, calibration, note, skipped, settings.threshold), encoding="utf-8"
    )
    print(f"wrote {out / 'hitrate.md'}")
    return 0


def _markdown(
    reports: dict[str, dict[str, Any]],
    calibration: dict[str, Any] | None,
    note: str,
    skipped: list[str],
    default_threshold: float,
) -> str:
    t = default_threshold
    lines = [
        "# Hit quality of cosine similarity alone (`hit_decision = cosine`)",
        "",
        "Generated by `.venv/bin/python benchmarks/hitrate.py --shared-data ../shared/data` "
        f"({time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs). Every pair "
        "goes through the real cache (`CacheService` over SQLite + FAISS, bundled "
        "all-MiniLM-L6-v2, one partition per pair): `a` stored, `b` looked up. Similarity is "
        "cosine in [-1, 1]; an exact repeat hits at the exact layer. Recall = hits on label-1 "
        "pairs / label-1 pairs; FHR (false-hit rate) = hits on label-0 pairs / label-0 pairs; "
        'precision = correct hits / all hits. "Recall at FHR <= x" is the recall at the lowest '
        "threshold (0.001 grid) whose FHR on that set is at most x: an upper bound, tuned on "
        "the set itself.",
        "",
        f"| set | n_pos | n_neg | recall @{t} | FHR @{t} | precision @{t} "
        "| recall @FHR<=1% | @FHR<=2% | @FHR<=5% |",
        "|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for name, r in reports.items():
        if "sweep" not in r:
            continue
        d = r["default"]
        lines.append(
            f"| {name} | {d['n_pos']} | {d['n_neg']} | {_pct(d['recall'])} "
            f"| {_pct(d['false_hit_rate'])} | {_pct(d['precision'])} | {_point(r, 0.01)} "
            f"| {_point(r, 0.02)} | {_point(r, 0.05)} |"
        )
    ctx = reports.get("contextual", {}).get("contexts")
    if ctx:
        lines += [
            "",
            f"Context cases ({ctx['n_cases']}, all label 0): false hits {ctx['false_hits']} "
            f"(FHR {_pct(ctx['false_hit_rate'])}); cases with any candidate left after the "
            f"context-hash filter: {ctx['with_candidate']}.",
        ]
        for kind, r in ctx["by_kind"].items():
            lines.append(f"- `{kind}`: {r['n_neg'] + r['n_pos']} cases, {r['false_hits']} hits")
    hard = reports.get("hard-pairs")
    if hard and hard.get("by_kind"):
        lines += [
            "",
            f"## hard-pairs by kind at {t}",
            "",
            "| kind | label | pairs | hits | rate |",
            "|---|---:|---:|---:|---:|",
        ]
        for kind, r in hard["by_kind"].items():
            label = 1 if r["n_pos"] else 0
            n = r["n_pos"] or r["n_neg"]
            hits = r["true_hits"] + r["false_hits"]
            rate = r["recall"] if label else r["false_hit_rate"]
            lines.append(
                f"| {kind} | {label} | {n} | {hits} | {_pct(rate)} {'recall' if label else 'FHR'} |"
            )
    lines += ["", "## Calibration", ""]
    if calibration:
        c = calibration
        lines += [
            f"Held-out data: {c['source']} ({c['training_pairs']} pairs; a seed-{c['seed']} "
            f"subsample of {c['sample']} measured in {c['seconds']} s). Lowest threshold on a "
            f"{c['grid_step']} grid with FHR <= {_pct(c['max_false_hit_rate'])}: "
            f"**{c['threshold']}** (FHR {_pct(c['false_hit_rate'])}, recall "
            f"{_pct(c['recall'])}, precision {_pct(c['precision'])} on the sample). "
            f"The `hit_decision = cosine` default is {t}.",
            "",
            f"| set | recall @{c['threshold']} | FHR @{c['threshold']} "
            f"| precision @{c['threshold']} |",
            "|---|---:|---:|---:|",
        ]
        for name, r in reports.items():
            at = r.get("at_calibrated_threshold")
            if at:
                lines.append(
                    f"| {name} | {_pct(at['recall'])} | {_pct(at['false_hit_rate'])} "
                    f"| {_pct(at['precision'])} |"
                )
    else:
        lines.append(note)
    lines += ["", "## Runtime", "", "| set | pairs + cases | seconds | embedding batches |"]
    lines.append("|---|---:|---:|---:|")
    for name, r in reports.items():
        rt, dsd = r["runtime"], r["dataset"]
        lines.append(
            f"| {name} | {dsd['n_pairs'] + dsd['n_context_cases']} | {rt['seconds']} "
            f"| {rt['embedding_batches']} (largest {rt['largest_batch']}) |"
        )
    if skipped:
        lines += ["", "Skipped:", *(f"- {s}" for s in skipped)]
    lines += [
        "",
        "Per-set JSON (`hitrate-<set>.json`: `default`, `sweep` 0.50-0.99, `operating_points`, "
        "`by_kind`, `contexts`) and plots (`hitrate-<set>.png`) are next to this file.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
