"""``semcache report``: spend, savings and tokens from the attribution rows, as a table or CSV."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

from .config import load_settings
from .levers.config import load_levers
from .levers.usage import parse_time, usage_summary
from .store.attribution import GROUP_FIELDS, USAGE_FIELDS, AttributionStore
from .store.sqlite import StoreOptions, make_engine

__all__ = ["register", "run_report"]


def register(commands: Any) -> None:
    """Add ``semcache report`` to the CLI."""
    parser = commands.add_parser("report", help="print or export spend and savings")
    parser.add_argument("--config", help="TOML settings file (for data_dir, database_url)")
    parser.add_argument("--data-dir", dest="data_dir", help="data folder (default index_data)")
    parser.add_argument("--tenant", help="only this tenant (default: all)")
    parser.add_argument(
        "--group-by",
        default="tenant",
        help=f"comma-separated, from {', '.join(GROUP_FIELDS)} (default tenant)",
    )
    parser.add_argument("--since", help="ISO date or date-time, or epoch seconds")
    parser.add_argument("--until", help="ISO date or date-time, or epoch seconds")
    parser.add_argument("--csv", dest="csv_path", help="also write the groups to this CSV file")
    parser.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    settings = load_settings(config_file=args.config, overrides={"data_dir": args.data_dir})
    group_by = [g.strip() for g in args.group_by.split(",") if g.strip()]
    since = parse_time("--since", args.since)
    until = parse_time("--until", args.until)
    levers = load_levers(settings.levers_file)
    engine = make_engine(settings.resolved_database_url, StoreOptions())
    try:
        result = usage_summary(
            AttributionStore(engine),
            levers,
            tenant=args.tenant,
            group_by=group_by,
            since=since,
            until=until,
        )
    finally:
        engine.dispose()
    rows = [
        [*(str(g["key"][k]) for k in group_by), *(_cell(g[c]) for c in USAGE_FIELDS)]
        + (["ANOMALY" if g.get("anomaly") else ""] if "day" in group_by else [])
        for g in result["groups"]
    ]
    header = [*group_by, *USAGE_FIELDS] + (["flag"] if "day" in group_by else [])
    total = ["TOTAL", *([""] * (len(group_by) - 1))] if group_by else []
    total += [_cell(result["total"][c]) for c in USAGE_FIELDS]
    if "day" in group_by:
        total.append("")  # the flag column: a total is no day to flag
    _print_table(header, [*rows, total])
    if args.csv_path:
        with Path(args.csv_path).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
            writer.writerow(total)
        print(f"wrote {len(rows)} rows and the total to {args.csv_path}", file=sys.stderr)
    return 0


def _cell(value: Any) -> str:
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for n, row in enumerate([header, *rows]):
        print("  ".join(str(cell).rjust(w) for cell, w in zip(row, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * w for w in widths))
