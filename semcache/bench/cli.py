"""``semcache bench hitrate``, ``replay``, ``convert`` and ``semcache calibrate``.

    semcache bench hitrate --pairs FILE.jsonl [--contexts FILE.jsonl] [--json OUT] [--plot PNG]
    semcache bench replay --prompts FILE.jsonl [--model M] [--json OUT]
    semcache bench convert --source qqp-csv [--input PATH | --shared-data DIR] --out FILE.jsonl
    semcache calibrate --pairs FILE.jsonl --max-false-hit-rate 0.01 [--config C] [--out OUT]

The arguments of each command; their handlers are in ``bench.commands``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from . import datasets
from .commands import calibrate_command, convert_command, hitrate_command, replay_command

__all__ = ["register"]


def register(commands: Any) -> None:
    """Add ``bench`` (``hitrate``, ``replay``, ``convert``) and ``calibrate`` to the parser."""
    bench = commands.add_parser("bench", help="measure hit quality; convert data sets")
    bench_commands = bench.add_subparsers(dest="bench_command", metavar="BENCH_COMMAND")
    bench.set_defaults(handler=lambda _args: _usage(bench))

    hitrate = bench_commands.add_parser(
        "hitrate",
        help="hit recall, false-hit rate and precision on labelled pairs",
        description="Store each pair's `a` and look up its `b` through the real cache (one "
        "partition per pair), then report recall, false-hit rate and precision for the shipped "
        "default decision and a sweep of cosine thresholds.",
    )
    _measure_arguments(hitrate, pairs_required=False)
    hitrate.add_argument("--contexts", type=Path, help="context-case JSONL file")
    hitrate.add_argument("--json", type=Path, dest="json_out", help="write the report as JSON")
    hitrate.add_argument(
        "--plot",
        type=Path,
        help="PNG of recall vs false-hit rate (default: next to --json; needs semcache[plot])",
    )
    hitrate.add_argument("--name", help="data set name used in the report (default: file stem)")
    hitrate.add_argument(
        "--short", action="store_true", help="print the default row without the full sweep"
    )
    hitrate.set_defaults(handler=hitrate_command)

    replay = bench_commands.add_parser(
        "replay",
        help="replay a prompt stream through a cold cache: hit rate, money saved, latency",
        description="Look up every prompt in arrival order in one partition of a fresh cache "
        "(storing each miss), then report the hit rate by layer, the money the hits saved "
        '(pricing table) and the lookup latency. Prompt JSONL: {"prompt": str} or '
        '{"messages": [...]}, optional "prompt_id"/"id" and "response".',
    )
    replay.add_argument("--prompts", type=Path, required=True, help="prompt JSONL file")
    replay.add_argument(
        "--model",
        default="gpt-4o-mini",
        help="model the prompts are priced as and partitioned by (default gpt-4o-mini)",
    )
    replay.add_argument(
        "--output-tokens",
        type=int,
        default=None,
        help="answer length assumed where a record has no response (default 300)",
    )
    replay.add_argument("--pricing-file", type=Path, help="prices laid over the shipped table")
    replay.add_argument(
        "--config", type=Path, help="TOML settings to replay with (default: the shipped defaults)"
    )
    replay.add_argument(
        "--threshold", type=float, help="replay with this default threshold instead"
    )
    replay.add_argument("--limit", type=int, help="replay only the first N prompts")
    replay.add_argument("--json", type=Path, dest="json_out", help="write the report as JSON")
    replay.add_argument("--name", help="data set name used in the report (default: file stem)")
    replay.add_argument(
        "--show-hits", type=int, default=10, help="semantic hits printed (default 10)"
    )
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")
    replay.set_defaults(handler=replay_command)

    convert = bench_commands.add_parser(
        "convert",
        help="convert a public data set to the labelled-pair JSONL format",
        description="Write a public data set as labelled-pair JSONL (docs/ARCHITECTURE.md) "
        '({"id", "a", "b", "label", "kind"?}).',
    )
    convert.add_argument("--source", required=True, choices=datasets.CONVERT_SOURCES)
    convert.add_argument(
        "--input",
        type=Path,
        help="file to read (default: the shared copy under --shared-data)",
    )
    convert.add_argument(
        "--shared-data",
        "--data-dir",
        dest="shared_data",
        type=Path,
        default=None,
        help="shared data folder, read when --input is not given (default $SEMCACHE_SHARED_DATA)",
    )
    convert.add_argument("--out", type=Path, required=True, help="pair JSONL to write")
    convert.set_defaults(handler=convert_command)

    calibrate = commands.add_parser(
        "calibrate",
        help="tune the configured hit decision to a false-hit rate on labelled pairs",
        description="Measure the pairs as `semcache bench hitrate` does with the configuration "
        "(--config, else --out if it exists, else the shipped defaults) and tune the hit "
        "decision it names: with hit_decision = cosine the lowest cosine `threshold`, with "
        "verified (the default) the lowest `verifier_score_threshold` at the configured cosine "
        "floor, on a grid, whose false-hit rate is at most the limit. Writes that key to a "
        "TOML config that `semcache serve --config` reads, and prints the recall and "
        "false-hit rate the file gets.",
    )
    _measure_arguments(
        calibrate,
        pairs_required=True,
        config_default="--out if it exists, else the shipped defaults",
    )
    calibrate.add_argument(
        "--max-false-hit-rate",
        type=float,
        required=True,
        help="largest acceptable false-hit rate, a fraction (0.01 = 1%%)",
    )
    calibrate.add_argument(
        "--out", type=Path, default=Path("semcache.toml"), help="TOML config to write or update"
    )
    calibrate.add_argument(
        "--step", type=float, default=0.01, help="grid step of the tuned key (default 0.01)"
    )
    calibrate.set_defaults(handler=calibrate_command)


def _measure_arguments(
    parser: argparse.ArgumentParser,
    *,
    pairs_required: bool,
    config_default: str = "the shipped defaults",
) -> None:
    parser.add_argument(
        "--pairs",
        type=Path,
        required=pairs_required,
        help="labelled pairs: pair JSONL, QQP test.csv, STS-B sts-test.csv, GPTCache's "
        "mock_data.json or similiar_qqp*.json.gz (detected from the name; see --format)",
    )
    parser.add_argument(
        "--format",
        dest="pairs_format",
        choices=datasets.PAIR_FORMATS,
        help="the --pairs file's format, when its name does not tell",
    )
    parser.add_argument(
        "--config", type=Path, help=f"TOML settings to measure (default: {config_default})"
    )
    parser.add_argument(
        "--threshold", type=float, help="measure this default threshold instead of the config's"
    )
    parser.add_argument(
        "--limit", type=int, help="measure a random subsample of this many pairs (fixed --seed)"
    )
    parser.add_argument("--seed", type=int, default=0, help="subsample seed (default 0)")
    parser.add_argument(
        "--concurrency", type=int, default=64, help="pairs in flight at once (default 64)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2
