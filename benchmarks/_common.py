"""Shared helpers of the benchmark scripts: percentiles, query sets, result files."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def shipped_verifier_precision() -> str:
    """The ``verifier_precision`` the service ships with (the settings' default): benchmark
    results at it keep their plain names; another precision's get a suffix or a folder."""
    from semcache.config import load_settings

    return load_settings(environ={}).verifier_precision


sys.path.insert(0, str(REPO / "tests"))  # for ServerProcess, the real-server test helper

SUBJECTS = [
    "reset my password",
    "export my data to CSV",
    "change the billing email",
    "enable two-factor login",
    "invite a teammate",
    "delete a project",
    "rotate an API key",
    "set up a webhook",
    "download last month's invoice",
    "change my plan",
    "restore a deleted file",
    "connect Slack",
    "increase the upload limit",
    "turn off email notifications",
    "transfer ownership of a workspace",
    "merge two accounts",
    "change the default language",
    "schedule a report",
    "add a custom domain",
    "revoke a session",
]
FORMS = [
    "How do I {s}?",
    "What is the way to {s}?",
    "Can you tell me how to {s}?",
    "Where do I go to {s}?",
    "Is it possible to {s}?",
]


def queries(n: int) -> list[str]:
    """n distinct support-style questions."""
    out = []
    for i in range(n):
        subject = SUBJECTS[i % len(SUBJECTS)]
        form = FORMS[(i // len(SUBJECTS)) % len(FORMS)]
        out.append(form.format(s=subject) + ("" if i < 100 else f" (account {i})"))
    return out


def summary_ms(samples_s: list[float]) -> dict[str, float]:
    """Median, p90 and p99 of samples in seconds, as milliseconds."""
    ordered = sorted(samples_s)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))] * 1000

    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p90_ms": round(pct(0.90), 3),
        "p99_ms": round(pct(0.99), 3),
    }


def write_results(name: str, data: dict[str, Any], table: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(table + "\n")
    print(table)


def alternated(calls: dict[str, Any], inputs: list[Any]) -> dict[str, dict[str, float]]:
    """Each of ``calls`` on each input in turn, sample by sample; their timings (ms)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for item in inputs:
        for name, call in calls.items():
            started = time.perf_counter()
            call(item)
            times[name].append(time.perf_counter() - started)
    return {name: summary_ms(samples) for name, samples in times.items()}


def add_baseline_options(parser: Any, rounds: int) -> None:
    """``--baseline DIR`` (another semcache checkout, such as ``git worktree add /tmp/base
    HEAD~1``) and ``--rounds N``, for ``checkouts_in_turn``."""
    parser.add_argument("--baseline", type=Path, default=None, help="another semcache checkout")
    parser.add_argument("--rounds", type=int, default=rounds)


def checkouts_in_turn(baseline: Path | None, rounds: int) -> Iterator[tuple[int, str, Path]]:
    """(round, name, checkout) to run: this checkout once, or with ``baseline`` for ``rounds``
    rounds, alternated and the order flipped each round, so the machine's drift falls on both."""
    codes = [("this checkout", REPO)]
    if baseline is not None:
        codes.append(("baseline", baseline.resolve()))
    for r in range(rounds if baseline is not None else 1):
        for name, repo in codes[:: 1 if r % 2 == 0 else -1]:
            yield r, name, repo


def revision(repo: Path) -> str:
    """The checkout's commit (short hash and subject), flagged when it has uncommitted changes."""
    done = subprocess.run(
        ["git", "-C", str(repo), "log", "-1", "--format=%h %s"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()[:90] + (" (+ uncommitted changes)" if dirty.stdout.strip() else "")
