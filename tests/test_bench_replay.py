"""`semcache bench replay`: a prompt stream through a cold cache, in arrival order.

The replay runs the real cache (bundled MiniLM, SQLite + FAISS) with cosine alone at 0.9, so
which prompt hits is fixed by the text: an exact repeat, a case-and-punctuation variant
(cosine ~1.0, a different exact key), and prompts nothing earlier resembles.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from servers import run_cli

from semcache.bench.hitrate import bench_settings
from semcache.bench.replay import (
    Prompt,
    ReplayRun,
    WrongHitJudge,
    build_replay_report,
    replay,
)
from semcache.cli import main
from semcache.levers.pricing import PricingTable
from semcache.levers.tokens import TokenCounter

PROMPTS: tuple[dict[str, Any], ...] = (
    {"prompt_id": "p0", "prompt": "How do I reset my password?"},
    {"prompt_id": "p1", "prompt": "What is the capital of France?"},
    {"prompt_id": "p2", "prompt": "How do I reset my password?"},
    {"id": "p3", "messages": [{"role": "user", "content": "what is the capital of france"}]},
    {"prompt_id": "p4", "prompt": "Tell me a joke about cats.", "response": "Meow. " * 40},
    {"prompt_id": "p5", "prompt": "   "},
    {"prompt_id": "p6", "prompt": "Write a haiku about winter mornings"},
)
MODEL = "gpt-4o-mini"


def _jsonl(path: Path, rows: tuple[dict[str, Any], ...]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("replay")
    config = root / "cosine.toml"
    config.write_text('hit_decision = "cosine"\nthreshold = 0.9\n')
    out = root / "replay.json"
    rc = main(
        [
            "bench",
            "replay",
            "--prompts",
            str(_jsonl(root / "prompts.jsonl", PROMPTS)),
            "--model",
            MODEL,
            "--config",
            str(config),
            "--json",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return result


def test_hits_by_layer_in_arrival_order(report: dict[str, Any]) -> None:
    hits = report["hits"]
    assert report["dataset"]["n_prompts"] == len(PROMPTS)
    assert report["dataset"]["n_skipped"] == 1  # the blank prompt
    assert (hits["exact"], hits["semantic"], hits["miss"]) == (1, 1, 4)
    assert hits["rate"] == pytest.approx(2 / 6)
    [semantic] = report["semantic_hits"]
    assert (semantic["id"], semantic["served_by_id"]) == ("p3", "p1")
    assert semantic["similarity"] > 0.9


def test_money_saved_is_the_priced_calls_the_hits_replaced(report: dict[str, Any]) -> None:
    pricing, counter = PricingTable.load(), TokenCounter()

    def call(text: str, output_tokens: int) -> Decimal:
        tokens = counter.estimate_chat_tokens(MODEL, [{"role": "user", "content": text}])
        usd = pricing.estimate(MODEL, tokens, output_tokens).usd
        assert usd is not None
        return usd

    saved = call("How do I reset my password?", 300) + call("what is the capital of france", 300)
    joke = counter.count_text_tokens(MODEL, "Meow. " * 40)
    total = (
        saved
        + call("How do I reset my password?", 300)
        + call("What is the capital of France?", 300)
        + call("Tell me a joke about cats.", joke)
        + call("Write a haiku about winter mornings", 300)
    )
    money = report["money"]
    assert money["assumed_output_tokens"] == 300
    assert money["saved_usd"] == pytest.approx(float(saved), abs=1e-6)
    assert money["without_cache_usd"] == pytest.approx(float(total), abs=1e-6)
    assert money["output_tokens_saved"] == 600


def test_lookup_latency_per_layer(report: dict[str, Any]) -> None:
    latency = report["lookup_latency"]
    counts = {status: stats["n"] for status, stats in latency.items()}
    assert sorted(counts.values()) == [1, 1, 4]
    for stats in latency.values():
        assert 0 < stats["median_ms"] <= stats["p99_ms"]


@pytest.mark.parametrize(
    ("line", "extra", "message"),
    [
        ('{"prompt": "hi"}\n[1, 2]\n', [], "line 2: expected a JSON object"),
        ('{"prompt_id": "x"}\n', [], 'give "prompt"'),
        ('{"prompt": "hi"}\n', ["--model", "no-such-model"], "has no price"),
        ('{"prompt": "hi"}\n', ["--limit", "0"], "--limit must be positive"),
    ],
)
def test_bad_input_is_one_error_line(
    tmp_path: Path, line: str, extra: list[str], message: str
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(line, encoding="utf-8")
    result = run_cli("bench", "replay", "--prompts", str(prompts), "--no-progress", *extra)
    assert result.returncode == 2
    lines = [row for row in result.stderr.splitlines() if row.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("semcache: error: ") and message in lines[0]


def _cosine_replay(tmp_path: Path, texts: list[str], judge: WrongHitJudge | None) -> ReplayRun:
    """Prompts "a", "b", "c"... through cosine 0.9; ``judge`` as the replay's ``wrong``."""
    config = tmp_path / "cosine.toml"
    config.write_text('hit_decision = "cosine"\nthreshold = 0.9\n')
    prompts = [
        Prompt(chr(ord("a") + n), [{"role": "user", "content": text}])
        for n, text in enumerate(texts)
    ]
    return replay(prompts, settings=bench_settings(str(config)), model=MODEL, wrong=judge)


def _b_served_by_a_is_wrong(new: Prompt, cached: Prompt) -> bool | None:
    return (new.id, cached.id) == ("b", "a")


def test_a_judged_wrong_hit_is_reported_and_the_prompt_stored(tmp_path: Path) -> None:
    texts = ["How do I reset my password?", "How can I reset my password?"]
    texts.append(texts[1])
    plain = _cosine_replay(tmp_path, texts, None)
    acted = _cosine_replay(tmp_path, texts, _b_served_by_a_is_wrong)
    # Without reports "b" is served by "a" and never stored, so "c" is served by "a" too.
    assert [(e.status, e.served_by) for e in plain.events[1:]] == [
        ("HIT-SEMANTIC", 0),
        ("HIT-SEMANTIC", 0),
    ]
    # Reported: "b" was still served (the report comes after), then stored with its own
    # answer, which "c" repeats exactly; "a" no longer answers a query as far as "b".
    assert acted.wrong_hits_reported == 1
    assert [(e.status, e.served_by, e.reported_wrong) for e in acted.events[1:]] == [
        ("HIT-SEMANTIC", 0, True),
        ("HIT-EXACT", 1, False),
    ]
    report = build_replay_report(acted, PricingTable.load())
    assert report["hits"]["wrong_hits_reported"] == 1
    assert report["money"]["output_tokens_saved"] == 300  # the exact hit only


def test_a_wrong_hit_on_the_same_question_deletes_the_entry(tmp_path: Path) -> None:
    texts = ["What is the meaning of life?", "what is the meaning of life"]
    run = _cosine_replay(tmp_path, [*texts, texts[0]], _b_served_by_a_is_wrong)
    # "b" was served by "a", judged wrong, and (the same question) "a" was deleted, not
    # floored: "c", a repeat of "a", is no exact hit but served by the stored "b". Nothing was
    # dropped as skipped.
    assert run.wrong_hits_reported == 1
    assert [(e.status, e.served_by) for e in run.events] == [
        ("MISS", None),
        ("HIT-SEMANTIC", 0),
        ("HIT-SEMANTIC", 1),
    ]
