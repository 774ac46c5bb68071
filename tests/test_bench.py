"""`semcache bench hitrate`, `semcache bench convert` and `semcache calibrate` end to end.

The hit-rate runs go through the real cache (bundled MiniLM, SQLite + FAISS) on a dozen
hand-made pairs, so the whole module takes some seconds, most of it loading the model.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from servers import run_cli

from semcache.bench.report import write_plot
from semcache.cli import main
from semcache.config import load_settings
from semcache.errors import ConfigError

PAIRS: tuple[dict[str, Any], ...] = (
    {"a": "How do I reset my password?", "b": "How do I reset my password?", "label": 1,
     "kind": "exact"},
    {"a": "What is the capital of France?", "b": "How do I bake sourdough bread at home?",
     "label": 0, "kind": "unrelated"},
    {"a": "How can I cancel my subscription?", "b": "how do i cancel my subscription",
     "label": 1, "kind": "typo"},
    {"a": "What's the best way to learn Python?", "b": "How should I go about learning Python?",
     "label": 1, "kind": "reword"},
    {"a": "How do I convert a string to an int in Java?",
     "b": "How do I convert an int to a string in Java?", "label": 0, "kind": "direction"},
    {"a": "What was the inflation rate in 2021?", "b": "What was the inflation rate in 2022?",
     "label": 0, "kind": "number"},
    {"a": "How do I upgrade my plan?", "b": "How do I downgrade my plan?", "label": 0,
     "kind": "antonym"},
    {"a": "Where can I find my invoice?", "b": "Where do I find my invoices?", "label": 1,
     "kind": "reword"},
    {"a": "Is it safe to eat raw eggs?", "b": "Are raw eggs safe to eat?", "label": 1,
     "kind": "reorder", "id": "p9", "domain": "health"},
    # Label noise as QQP has it: an exact repeat labelled "different" always hits.
    {"a": "What time does the store open on Sunday?",
     "b": "What time does the store open on Sunday?", "label": 0, "kind": "noise"},
    {"a": "How many vacation days do I get?", "b": "How much paid time off do I get per year?",
     "label": 1, "kind": "synonym"},
    {"a": "Translate 'hello' to Spanish", "b": "Translate 'hello' to French", "label": 0,
     "kind": "entity"},
)  # fmt: skip

FOLLOW_UP = (
    {"role": "user", "content": "Who painted the Mona Lisa?"},
    {"role": "assistant", "content": "Leonardo da Vinci."},
    {"role": "user", "content": "When was he born?"},
)
CONVERSATION = (
    {"role": "user", "content": "What is the tallest mountain?"},
    {"role": "assistant", "content": "Mount Everest."},
    {"role": "user", "content": "How tall is it?"},
)
CONTEXTS: tuple[dict[str, Any], ...] = (
    {"cached": FOLLOW_UP[:1], "new": FOLLOW_UP, "label": 0, "kind": "followup_vs_main"},
    {"cached": CONVERSATION, "new": CONVERSATION, "label": 1, "kind": "same_conversation"},
)


def _jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bench")
    # The harness is under test, not the verifier: cosine alone makes the service's verdicts
    # and the offline threshold sweep comparable.
    cosine = root / "cosine.toml"
    cosine.write_text('hit_decision = "cosine"\nthreshold = 0.9\n')
    return {
        "root": root,
        "cosine": cosine,
        "pairs": _jsonl(root / "pairs.jsonl", PAIRS),
        "contexts": _jsonl(root / "contexts.jsonl", CONTEXTS),
    }


@pytest.fixture(scope="module")
def hitrate(files: dict[str, Path]) -> dict[str, Any]:
    out = files["root"] / "out" / "report.json"
    rc = main(
        [
            "bench",
            "hitrate",
            "--pairs",
            str(files["pairs"]),
            "--contexts",
            str(files["contexts"]),
            "--json",
            str(out),
            "--config",
            str(files["cosine"]),
            "--no-progress",
        ]
    )
    assert rc == 0
    report: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return report


def test_report_shape(hitrate: dict[str, Any]) -> None:
    default = hitrate["default"]
    for key in ("recall", "false_hit_rate", "precision", "n_pos", "n_neg", "threshold"):
        assert key in default
    assert (default["n_pos"], default["n_neg"]) == (6, 6)
    assert default["threshold"] == 0.9
    assert hitrate["decision"]["threshold"] == 0.9
    assert hitrate["dataset"]["n_pairs"] == 12
    thresholds = [row["threshold"] for row in hitrate["sweep"]]
    assert thresholds == sorted(thresholds)
    assert thresholds[0] == 0.5 and thresholds[-1] == 0.99
    recall = [row["recall"] for row in hitrate["sweep"]]
    fhr = [row["false_hit_rate"] for row in hitrate["sweep"]]
    assert all(x >= y for x, y in itertools.pairwise(recall))
    assert all(x >= y for x, y in itertools.pairwise(fhr))
    # The service's own verdicts agree with the offline sweep at the same threshold.
    at_default = next(row for row in hitrate["sweep"] if row["threshold"] == 0.9)
    assert at_default["true_hits"] == default["true_hits"]
    assert at_default["false_hits"] == default["false_hits"]


def test_exact_repeat_hits_and_unrelated_pair_misses(hitrate: dict[str, Any]) -> None:
    kinds = hitrate["by_kind"]
    assert kinds["exact"]["true_hits"] == 1
    assert kinds["noise"]["false_hits"] == 1  # an exact repeat hits whatever its label
    assert kinds["unrelated"]["false_hits"] == 0
    assert hitrate["default"]["exact_hits"] == 2
    # Even the lowest swept threshold does not let the unrelated pair through.
    lowest = hitrate["sweep"][0]
    assert lowest["threshold"] == 0.5
    assert lowest["false_hits"] < 6


def test_context_cases(hitrate: dict[str, Any]) -> None:
    contexts = hitrate["contexts"]
    assert contexts["n_cases"] == 2
    assert contexts["false_hits"] == 0  # a follow-up never hits its standalone main query
    assert contexts["true_hits"] == 1  # the same conversation hits exactly
    assert set(contexts["by_kind"]) == {"followup_vs_main", "same_conversation"}


def test_plot_is_a_png(files: dict[str, Path], hitrate: dict[str, Any]) -> None:
    png = files["root"] / "out" / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_names_the_extra(
    tmp_path: Path, hitrate: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # matplotlib is the optional `plot` extra: hide it as if it were not installed.
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ConfigError, match=r"plots need matplotlib: pip install 'semcache\[plot\]'"):
        write_plot(hitrate, tmp_path / "plot.png")
    assert not (tmp_path / "plot.png").exists()


def _default_row(files: dict[str, Path], config: Path, name: str) -> dict[str, Any]:
    """The default row of `bench hitrate` measured with ``config``."""
    out = files["root"] / f"{name}.json"
    rc = main(
        [
            "bench",
            "hitrate",
            "--pairs",
            str(files["pairs"]),
            "--config",
            str(config),
            "--json",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    default: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))["default"]
    return default


def _printed_counts(printed: str, what: str) -> tuple[int, int]:
    """(hits, pairs) that calibrate printed for ``what`` ("recall" or "false-hit rate")."""
    found = re.search(rf"{what} [0-9.]+% \((\d+)/(\d+)\)", printed)
    assert found, printed
    return int(found[1]), int(found[2])


def test_calibrate_cosine_writes_the_threshold_and_the_decision(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = files["root"] / "semcache.toml"
    config.write_text("# my settings\nport = 9000\nthreshold = 0.5\n", encoding="utf-8")
    rc = main(
        [
            "calibrate",
            "--pairs",
            str(files["pairs"]),
            "--config",
            str(files["cosine"]),
            "--max-false-hit-rate",
            "0.2",
            "--out",
            str(config),
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    settings = load_settings(config_file=config, environ={})
    assert settings.port == 9000  # other lines are kept
    assert "# my settings" in config.read_text(encoding="utf-8")
    # The file named no decision (verified by default): the measured one is written with it.
    assert settings.hit_decision == "cosine"
    assert "tuned hit_decision = cosine: threshold" in printed
    threshold = settings.threshold
    assert threshold is not None and 0.0 <= threshold <= 1.0
    assert f"threshold = {threshold}" in printed
    # Measured again with the written config, the default row meets the limit.
    default = _default_row(files, config, "calibrated-cosine")
    assert default["threshold"] == threshold
    assert default["false_hit_rate"] <= 0.2
    assert default["true_hits"] == _printed_counts(printed, "recall")[0]


def test_calibrate_verified_tunes_the_verifier_score_threshold(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = files["root"] / "verified.toml"
    config.write_text("# mine\nport = 9001\n", encoding="utf-8")
    rc = main(
        [
            "calibrate",
            "--pairs",
            str(files["pairs"]),
            "--max-false-hit-rate",
            "0.2",
            "--out",
            str(config),
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    text = config.read_text(encoding="utf-8")
    settings = load_settings(config_file=config, environ={})
    assert settings.port == 9001 and "# mine" in text
    # The default decision is the verifier: its score threshold is tuned, and the cosine floor
    # stays as configured (auto), not raised to a cosine-only threshold.
    assert settings.hit_decision == "verified"
    assert settings.threshold is None
    assert not re.search(r"^threshold\s*=", text, re.MULTILINE)
    score = settings.verifier_score_threshold
    assert score is not None and 0.0 <= score <= 1.0
    assert "tuned hit_decision = verified: verifier_score_threshold" in printed
    assert f"wrote verifier_score_threshold = {score} to {config}" in printed
    recall_hits, n_pos = _printed_counts(printed, "recall")
    false_hits, n_neg = _printed_counts(printed, "false-hit rate")
    assert false_hits / n_neg <= 0.2
    # Measured again with the written config, the verifier meets the limit with the recall
    # calibrate printed.
    default = _default_row(files, config, "calibrated-verified")
    assert (default["n_pos"], default["n_neg"]) == (n_pos, n_neg)
    assert default["false_hit_rate"] <= 0.2
    assert default["false_hits"] == false_hits
    assert default["true_hits"] >= recall_hits


@pytest.mark.parametrize(
    ("decision", "key"), [("verified", "verifier_score_threshold"), ("cosine", "threshold")]
)
def test_calibrate_says_when_nothing_meets_the_limit(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], decision: str, key: str
) -> None:
    config = files["root"] / f"never-{decision}.toml"
    extra = ["--config", str(files["cosine"])] if decision == "cosine" else []
    rc = main(
        [
            "calibrate",
            "--pairs",
            str(files["pairs"]),
            *extra,
            "--max-false-hit-rate",
            "0",
            "--out",
            str(config),
            "--no-progress",
        ]
    )
    assert rc == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("semcache")]
    assert len(lines) == 1
    assert lines[0].startswith(f"semcache: error: no {key} up to 1.0")
    assert f"hit_decision {decision}" in lines[0]
    assert not config.exists()


@pytest.mark.parametrize("command", [["bench", "hitrate"], ["calibrate"]])
def test_missing_file_is_one_error_line(tmp_path: Path, command: list[str]) -> None:
    args = [*command, "--pairs", str(tmp_path / "missing.jsonl"), "--no-progress"]
    if command == ["calibrate"]:
        args += ["--max-false-hit-rate", "0.01"]
    result = run_cli(*args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("semcache: error: ")
    assert "missing.jsonl" in lines[0] and "does not exist" in lines[0]


def test_malformed_pairs_file_is_one_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": "x", "b": "y"}\n', encoding="utf-8")
    result = run_cli("bench", "hitrate", "--pairs", str(bad))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "missing field(s) label" in lines[0]


def test_convert_writes_pair_jsonl(tmp_path: Path) -> None:
    csv = tmp_path / "test.csv"
    csv.write_text(
        "question1,question2,is_duplicate\nHow old is Paris?,What is the age of Paris?,1\n"
        "Is tea healthy?,Is coffee healthy?,0\n",
        encoding="utf-8",
    )
    out = tmp_path / "pairs.jsonl"
    result = run_cli(
        "bench", "convert", "--source", "qqp-csv", "--input", str(csv), "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["label"] for r in rows] == [1, 0]
    assert rows[0]["a"] == "How old is Paris?"


def test_convert_reads_the_shared_copy_under_shared_data(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "meancache-qqp").mkdir(parents=True)
    (shared / "meancache-qqp" / "test.csv").write_text(
        "question1,question2,is_duplicate\nIs tea healthy?,Is coffee healthy?,0\n",
        encoding="utf-8",
    )
    out = tmp_path / "pairs.jsonl"
    args = ["bench", "convert", "--source", "qqp-csv", "--shared-data", str(shared)]
    assert main([*args, "--out", str(out)]) == 0
    assert [json.loads(line)["label"] for line in out.read_text().splitlines()] == [0]


def test_convert_without_input_or_shared_data_says_what_to_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # No folder is guessed from where the package is installed.
    monkeypatch.delenv("SEMCACHE_SHARED_DATA", raising=False)
    out = tmp_path / "pairs.jsonl"
    assert main(["bench", "convert", "--source", "stsb", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("semcache: error: no shared data folder: give --shared-data DIR")
    assert "$SEMCACHE_SHARED_DATA" in err and not out.exists()


def test_hitrate_reads_the_shipped_formats_by_name(tmp_path: Path) -> None:
    """`bench hitrate --pairs` takes QQP's test.csv, STS-B's tab-separated file and GPTCache's
    mock JSON as they ship (it used to fail on anything but pair JSONL: "not valid JSON")."""
    from semcache.bench import datasets

    qqp = tmp_path / "test.csv"
    qqp.write_text("question1,question2,is_duplicate\nHow old is Rome?,What is Rome's age?,1\n")
    stsb = tmp_path / "sts-test.csv"
    stsb.write_text(
        "main-captions\tMSRvid\t2012test\t0001\t5.000\tA man runs.\tA man is running.\n"
    )
    mock = tmp_path / "mock_data.json"
    mock.write_text(json.dumps([{"origin": "What is AI?", "similar": "Explain AI."}]))
    jsonl = _jsonl(tmp_path / "pairs.jsonl", PAIRS[:2])
    detected = {p.name: datasets.detect_pair_format(p) for p in (qqp, stsb, mock, jsonl)}
    assert detected == {
        "test.csv": "qqp-csv",
        "sts-test.csv": "stsb",
        "mock_data.json": "gptcache-mock",
        "pairs.jsonl": "jsonl",
    }
    assert [p.label for p in datasets.read_pairs(qqp)] == [1]
    assert [p.label for p in datasets.read_pairs(stsb)] == [1]
    assert datasets.read_pairs(mock)[0].b == "Explain AI."
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="--format"):
        datasets.detect_pair_format(other)
    # End to end, as the README's command gives it.
    result = run_cli(
        "bench", "hitrate", "--pairs", str(qqp), "--no-progress", "--short", timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "not valid JSON" not in result.stderr
