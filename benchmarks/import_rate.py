"""How fast ``semcache import`` warms a cache (issue 13 item 5: >= 300 entries/s on 2 cores).

Run from the repository root (about a minute for 10,000 entries on 2 CPU cores):

    nice -n 10 .venv/bin/python benchmarks/import_rate.py --shared-data ../shared/data -n 10000

Options: ``-n`` entries (default 10000), ``--batch-size`` (the import's, default its own 256),
``--shared-data DIR`` (default ``$SEMCACHE_SHARED_DATA``; without it the queries are synthetic
support questions), ``--baseline DIR`` (another checkout of semcache, such as
``git worktree add /tmp/base HEAD~1``: its import runs alternated with this one's, ``--rounds``
times each, and the table gives each run and the ratio of the medians; the way to compare
code on a shared machine, whose speed moves by 2x between hours).

Writes N cache-aside records with distinct queries (the 5,000 Chatbot Arena prompts of
``arena-prompts-5k``, then numbered variants of them) and a 600-character answer each to a
JSONL file, and runs ``semcache import`` on it into a fresh SQLite + FAISS data dir, as a user
would: a child process, the bundled encoder on ONNX Runtime from the shared model cache (no
export in the timing), default settings. Reports the import's own rate (the summary line: from
opening the file to the last commit, model loading excluded) and the wall time of the whole
command, and checks the store holds N entries. Results:
``benchmarks/results/import_rate.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from _common import add_baseline_options, checkouts_in_turn, queries, write_results

from semcache.embed.runtime import default_models_dir

ANSWER = (
    "Here is what to do, step by step. First, open the settings page and find the section "
    "the question is about. Second, check the current value and write it down, so you can go "
    "back. Third, make the change and save it; the page confirms the save at the top. Fourth, "
    "try the feature once to see that it behaves as you expect. If it does not, restore the "
    "old value and contact support with the time of the change, your workspace name and a "
    "screenshot of the page. Most changes apply at once; a few (billing, domains, SSO) take up "
    "to an hour to reach every region. Nothing here deletes data, and every change is logged "
    "in the audit trail your admins can read."
)


def prompts(shared: Path | None, n: int) -> tuple[list[str], str]:
    """n distinct queries and where they came from."""
    base: list[str] = []
    source = "synthetic support questions (benchmarks/_common.py queries)"
    arena = shared / "arena-prompts-5k" / "prompts.jsonl" if shared else None
    if arena is not None and arena.is_file():
        seen: set[str] = set()
        for line in arena.read_text(encoding="utf-8").splitlines():
            text = json.loads(line)["prompt"].strip()
            # Within the cache-aside API's limit (max_query_chars), as an importer would need.
            if text and len(text) <= 16_000 and text not in seen:
                seen.add(text)
                base.append(text)
        source = f"{len(base)} Chatbot Arena prompts (arena-prompts-5k), then numbered variants"
    else:
        base = queries(min(n, 5000))
    out = [
        base[i % len(base)] if i < len(base) else f"{base[i % len(base)]} (variant {i})"
        for i in range(n)
    ]
    return out, source


def run_import(repo: Path, source_file: Path, data: Path, n: int, batch_size: int | None) -> dict:
    """``semcache import`` of ``source_file`` by the code in ``repo``, into ``data`` (fresh)."""
    command = [sys.executable, "-m", "semcache", "import", str(source_file)]
    command += ["--data-dir", str(data), "--quiet"]
    if batch_size:
        command += ["--batch-size", str(batch_size)]
    env = {**os.environ, "SEMCACHE_MODELS_DIR": str(default_models_dir())}
    started = time.perf_counter()
    # cwd first on sys.path: ``-m semcache`` imports the checkout's own package.
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"semcache import ({repo}) failed ({done.returncode}):\n{done.stderr}")
    summary = done.stdout.strip().splitlines()[-1]
    match = re.search(r"imported (\d+) entries.* in ([\d.]+) s \((\d+) entries/s\)", summary)
    assert match is not None, summary
    with sqlite3.connect(data / "semcache.db") as conn:
        held = int(conn.execute("SELECT count(*) FROM entries").fetchone()[0])
    assert held == n == int(match.group(1)), (held, summary)
    import_s = float(match.group(2))
    return {
        "import_seconds": import_s,
        "entries_per_s": round(n / import_s, 1),
        "command_wall_seconds": round(wall, 1),
        "entries_per_s_with_model_load": round(n / wall, 1),
        "summary_line": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--shared-data", default=os.environ.get("SEMCACHE_SHARED_DATA"))
    add_baseline_options(parser, rounds=3)
    args = parser.parse_args()
    shared = Path(args.shared_data) if args.shared_data else None
    texts, source = prompts(shared, args.n)
    runs: dict[str, list[dict]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="semcache-import-rate-") as tmp:
        source_file = Path(tmp) / "records.jsonl"
        with source_file.open("w", encoding="utf-8") as out:
            for n, text in enumerate(texts):
                record = {"query": text, "response": {"answer": ANSWER, "n": n}, "model": "m"}
                out.write(json.dumps(record) + "\n")
        for r, name, repo in checkouts_in_turn(args.baseline, args.rounds):
            data = Path(tmp) / f"data-{r}-{len(runs[name])}-{name.replace(' ', '-')}"
            runs[name].append(run_import(repo, source_file, data, args.n, args.batch_size))
            print(name, runs[name][-1]["summary_line"], flush=True)
    ours = runs["this checkout"]
    median_run = sorted(ours, key=lambda x: x["entries_per_s"])[len(ours) // 2]
    result = {
        "entries": args.n,
        "batch_size": args.batch_size or 256,
        "queries": source,
        **median_run,
        "runs": runs,
        "baseline": str(args.baseline) if args.baseline else None,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "niceness": os.nice(0),
        },
        "store": "SQLite + FAISS, fresh data dir, default settings (onnx, 2 encoder threads)",
    }
    lines = [
        "# semcache import rate",
        "",
        f"`{' '.join(['semcache', 'import', 'records.jsonl', '--quiet'])}` of {args.n} "
        f"cache-aside records ({source}; a 600-character answer each) into a fresh SQLite + "
        f"FAISS data dir, chunks of {result['batch_size']}, on {os.cpu_count()} CPU cores "
        f"at niceness {os.nice(0)} (load average {result['machine']['load_average_after']} "
        "after the run; other work shared the machine).",
        "",
        "| code | entries | import (s) | entries/s | whole command incl. model load (s) |",
        "|---|---|---|---|---|",
    ]
    for name, done in runs.items():
        for run in done:
            lines.append(
                f"| {name} | {args.n} | {run['import_seconds']:.1f} | "
                f"{run['entries_per_s']:.0f} | {run['command_wall_seconds']:.1f} |"
            )
    if args.baseline is not None:
        medians = {
            name: statistics.median(r["entries_per_s"] for r in done) for name, done in runs.items()
        }
        ratio = medians["this checkout"] / medians["baseline"]
        result["ratio_to_baseline"] = round(ratio, 3)
        lines += [
            "",
            f"Median entries/s: this checkout {medians['this checkout']:.0f}, baseline "
            f"{medians['baseline']:.0f} ({args.baseline}): {ratio:.2f}x, runs alternated.",
        ]
    rerun = f"../shared/data -n {args.n}"
    if args.baseline is not None:
        rerun += f" --baseline {args.baseline} --rounds {args.rounds}"
    lines += [
        "",
        f"Rerun: `nice -n 10 .venv/bin/python benchmarks/import_rate.py --shared-data {rerun}`.",
    ]
    write_results("import_rate", result, "\n".join(lines))


if __name__ == "__main__":
    main()
