"""The handlers of ``semcache bench hitrate``, ``replay``, ``convert`` and ``semcache calibrate``
(their arguments: ``bench.cli``).

Every handler takes the parsed arguments and returns the exit status; a ``SemcacheError`` it
raises is printed by ``semcache.cli.main`` as one ``semcache: error:`` line (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ConfigError, InvalidRequest
from . import datasets

if TYPE_CHECKING:
    from ..cache.decision import HitDecision
    from ..config import Settings
    from .hitrate import Measurement

__all__ = ["calibrate_command", "convert_command", "hitrate_command", "replay_command"]

T = TypeVar("T")

# convert source -> the shared data set it reads when --input is not given.
_DEFAULT_INPUT: Mapping[str, str] = MappingProxyType(
    {
        "qqp-csv": "qqp-test",
        "gptcache-mock": "gptcache-mock",
        "gptcache-tar": "qqp-full",
        "stsb": "stsb-test",
        "arena-hard": "arena-hard",
    }
)


def _read(kind: str, path: Path, reader: Callable[[Path], T]) -> T:
    """Run a loader, turning a missing or malformed file into a one-line 400-style error."""
    if not path.is_file():
        raise InvalidRequest(f"{kind} file {path} does not exist", code="file_not_found")
    try:
        return reader(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{kind} file {path} is malformed: {exc}", code="bad_file") from exc
    except OSError as exc:
        raise InvalidRequest(f"{kind} file {path}: {exc.strerror} ({exc.filename})") from exc


def _measure(
    args: argparse.Namespace,
    contexts: Path | None,
    *,
    settings: Settings | None = None,
    decision: tuple[HitDecision, float] | None = None,
) -> tuple[Measurement, dict[str, Any], list[datasets.LabelledPair]]:
    """Load the files, run the measurement; returns (Measurement, dataset description, the
    pairs measured). ``settings`` default to ``--config`` and ``--threshold``; ``decision``
    replaces the hit decision they name (``measure``)."""
    from .hitrate import bench_settings, measure, subsample

    fmt = args.pairs_format
    pairs = (
        _read("pairs", args.pairs, lambda path: datasets.read_pairs(path, fmt))
        if args.pairs
        else []
    )
    cases = _read("contexts", contexts, datasets.read_context_cases_jsonl) if contexts else []
    if not pairs and not cases:
        what = "pairs" if args.pairs else "contexts"
        if args.pairs is None and contexts is None:
            raise InvalidRequest("give --pairs FILE.jsonl and/or --contexts FILE.jsonl")
        raise InvalidRequest(f"the {what} file holds no pairs or cases")
    if args.concurrency <= 0:
        raise InvalidRequest(f"--concurrency must be positive, got {args.concurrency}")
    pairs = subsample(pairs, args.limit, args.seed)
    cases = subsample(cases, args.limit, args.seed)
    if settings is None:
        settings = bench_settings(args.config, args.threshold)
    measurement = measure(
        pairs,
        cases,
        settings=settings,
        concurrency=args.concurrency,
        progress=None if args.no_progress else sys.stderr,
        decision=decision,
    )
    source = args.pairs or contexts
    assert source is not None
    dataset: dict[str, Any] = {
        "name": getattr(args, "name", None) or source.stem,
        "pairs": str(args.pairs) if args.pairs else None,
        "contexts": str(contexts) if contexts else None,
        "limit": args.limit,
        "seed": args.seed if args.limit else None,
        "config": str(args.config) if args.config else None,
    }
    return measurement, dataset, pairs


def hitrate_command(args: argparse.Namespace) -> int:
    """``semcache bench hitrate``."""
    from .hitrate import build_report
    from .report import format_table, write_plot

    measurement, dataset, _ = _measure(args, args.contexts)
    report = build_report(measurement, dataset=dataset)
    print(format_table(report, full_sweep=not args.short))
    if args.json_out:
        _write_json(args.json_out, report)
        print(f"wrote {args.json_out}")
    plot = args.plot or (args.json_out.with_suffix(".png") if args.json_out else None)
    if plot and "sweep" in report:
        try:
            write_plot(report, plot)
        except ConfigError as exc:
            if args.plot:  # asked for: an error; only implied by --json: a note
                raise
            print(f"no plot: {exc.message}", file=sys.stderr)
        else:
            print(f"wrote {plot}")
    return 0


def _write_json(path: Path, report: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise InvalidRequest(f"cannot write {path}: {exc.strerror}") from exc


def replay_command(args: argparse.Namespace) -> int:
    """``semcache bench replay``."""
    from ..levers.pricing import PricingTable
    from .hitrate import bench_settings
    from .replay import DEFAULT_OUTPUT_TOKENS, build_replay_report, format_replay, replay
    from .replay import read_prompts_jsonl as read_prompts

    prompts = _read("prompts", args.prompts, read_prompts)
    if args.limit is not None:
        if args.limit <= 0:
            raise InvalidRequest(f"--limit must be positive, got {args.limit}")
        prompts = prompts[: args.limit]
    pricing = (
        _read("pricing", args.pricing_file, PricingTable.load)
        if args.pricing_file
        else PricingTable.load()
    )
    if pricing.price(args.model) is None:
        raise InvalidRequest(
            f"--model {args.model!r} has no price in the pricing table; choose one of "
            f"{', '.join(pricing.models())} or add it with --pricing-file",
            code="unknown_model",
        )
    output_tokens = DEFAULT_OUTPUT_TOKENS if args.output_tokens is None else args.output_tokens
    run = replay(
        prompts,
        settings=bench_settings(args.config, args.threshold),
        model=args.model,
        output_tokens=output_tokens,
        progress=None if args.no_progress else sys.stderr,
    )
    dataset = {
        "name": args.name or args.prompts.stem,
        "prompts": str(args.prompts),
        "limit": args.limit,
        "config": str(args.config) if args.config else None,
    }
    report = build_replay_report(run, pricing, dataset=dataset, output_tokens=output_tokens)
    print(format_replay(report, show_hits=max(0, args.show_hits)))
    if args.json_out:
        _write_json(args.json_out, report)
        print(f"wrote {args.json_out}")
    return 0


def convert_command(args: argparse.Namespace) -> int:
    """``semcache bench convert``."""
    source: str = args.source
    path: Path = args.input or (
        datasets.shared_data_dir(args.shared_data) / datasets.SHARED_SETS[_DEFAULT_INPUT[source]]
    )

    def convert(p: Path) -> int:
        return datasets.convert_to_pairs(source, p, args.out)

    count = _read(source, path, convert)
    print(f"wrote {count} pairs from {path} to {args.out}")
    return 0


def calibrate_command(args: argparse.Namespace) -> int:
    """``semcache calibrate``: tune the hit decision the configuration names.

    ``hit_decision = cosine``: the lowest cosine ``threshold`` within the limit.
    ``hit_decision = verified``: the lowest ``verifier_score_threshold`` within the limit at the
    configured cosine floor, from the verifier's probability recorded for every pair during the
    measurement (exact repeats hit without the verifier).
    """
    from ..app import hit_decision
    from ..cache.verifier import VerifiedDecision
    from .hitrate import bench_settings, lowest_threshold_within, rates_at
    from .report import format_rate, write_settings
    from .scoring import RecordingDecision, score_outcomes

    limit: float = args.max_false_hit_rate
    if not 0.0 <= limit <= 1.0:
        raise InvalidRequest(f"--max-false-hit-rate must be a fraction in [0, 1], got {limit}")
    if not 0.0 < args.step <= 0.5:
        raise InvalidRequest(f"--step must be in (0, 0.5], got {args.step}")
    out: Path = args.out
    # The configuration tuned: --config, else the file being updated, else the defaults.
    config = args.config or (out if out.is_file() else None)
    settings = bench_settings(config, args.threshold)
    current = bench_settings(out if out.is_file() else None)  # what --out holds now
    recorder: RecordingDecision | None = None
    decision: tuple[HitDecision, float] | None = None
    floor: float | None = None
    if settings.hit_decision == "verified":
        verifier, floor = hit_decision(settings)
        assert isinstance(verifier, VerifiedDecision)
        recorder = RecordingDecision(verifier)
        decision = (recorder, floor)
    measurement, _, pairs = _measure(args, None, settings=settings, decision=decision)
    outcomes = measurement.pairs
    n_neg = sum(1 for o in outcomes if o.label == 0)
    if n_neg == 0:
        raise InvalidRequest(
            f"{args.pairs} has no label-0 pairs; a false-hit rate cannot be calibrated on it"
        )
    if recorder is not None:
        key = "verifier_score_threshold"
        outcomes = score_outcomes(pairs, outcomes, recorder)
        always = "exact repeats and same-question rewrites labelled 0 always hit"
    else:
        key = "threshold"
        always = "exact repeats labelled 0 always hit"
    chosen = lowest_threshold_within(outcomes, limit, step=args.step)
    if chosen is None or chosen.threshold is None:
        top = rates_at(outcomes, [1.0])[0]
        raise InvalidRequest(
            f"no {key} up to 1.0 keeps the false-hit rate on {args.pairs} at or below "
            f"{format_rate(limit, 2)} (hit_decision {settings.hit_decision}); even {key} 1.0 "
            f"gives {format_rate(top.false_hit_rate, 2)} ({always})",
            code="no_threshold",
        )
    # What the written file must hold to decide as measured: the tuned key, and the decision
    # and cosine floor where the file would otherwise name others.
    values: dict[str, float | str] = {}
    if current.hit_decision != settings.hit_decision:
        values["hit_decision"] = settings.hit_decision
    if floor is not None and current.threshold != settings.threshold:
        values["threshold"] = floor
    values[key] = chosen.threshold
    write_settings(out, values)
    detail = ""
    if floor is not None:
        how = "written" if "threshold" in values else "kept as configured"
        detail = f" (cosine floor {floor}, {how})"
    print(
        f"tuned hit_decision = {settings.hit_decision}: {key}{detail}, the lowest on a grid "
        f"of step {args.step} whose false-hit rate on {args.pairs} is at most "
        f"{format_rate(limit, 2)}"
    )
    print(
        f"with {key} = {chosen.threshold}: recall {format_rate(chosen.recall, 2)} "
        f"({chosen.true_hits}/{chosen.n_pos}), false-hit rate "
        f"{format_rate(chosen.false_hit_rate, 2)} ({chosen.false_hits}/{chosen.n_neg}), "
        f"precision {format_rate(chosen.precision, 2)}"
    )
    written = ", ".join(f"{k} = {json.dumps(v)}" for k, v in values.items())
    print(f"wrote {written} to {out}")
    return 0
