"""Dataset loaders: synthetic fixtures always; the real shared files when they are present."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from semcache.bench import datasets as ds
from semcache.bench.datasets import ContextCase, LabelledPair
from semcache.errors import ConfigError

# Tests are not installed: the repository's own files are found from this file. The shared data
# sits beside the checkout (``../shared/data``) unless $SEMCACHE_SHARED_DATA names it.
REPO = Path(__file__).resolve().parent.parent
HARD_PAIRS = REPO / "benchmarks" / "data" / "hard_pairs.jsonl"

# ---------------------------------------------------------------------------------------------
# helpers


def _write_tar_gz(path: Path, member: str, payload: Any) -> None:
    data = json.dumps(payload).encode()
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo(member)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))


def _shared_dir() -> Path:
    env = os.environ.get(ds.SHARED_DATA_ENV)
    folder = Path(env) if env else REPO.parent / "shared" / "data"
    if not folder.is_dir():
        pytest.skip(f"shared data folder {folder} absent (set ${ds.SHARED_DATA_ENV} to run these)")
    return folder


def _shared(name: str) -> Path:
    try:
        return ds.shared_set_path(name, _shared_dir())
    except FileNotFoundError as exc:
        pytest.skip(f"shared data absent (set ${ds.SHARED_DATA_ENV}): {exc}")


# ---------------------------------------------------------------------------------------------
# pair / context-case JSONL


def test_pairs_jsonl_round_trip(tmp_path: Path) -> None:
    pairs = [
        LabelledPair("how do I reset my password", "reset password?", 1, kind="terse", id="p1"),
        LabelledPair("GDP of the US in 2010", "GDP of the US in 2020", 0),
    ]
    out = tmp_path / "sub" / "pairs.jsonl"
    assert ds.write_pairs_jsonl(pairs, out) == 2
    assert ds.read_pairs_jsonl(out) == pairs
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[1])
    assert first == {"a": "GDP of the US in 2010", "b": "GDP of the US in 2020", "label": 0}


def test_read_pairs_ignores_extra_fields_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(
        '{"a": "x", "b": "y", "label": 1, "domain": "hr", "id": 7}\n\n'
        '{"a": "x", "b": "z", "label": 0, "kind": "number"}\n',
        encoding="utf-8",
    )
    assert ds.read_pairs_jsonl(path) == [
        LabelledPair("x", "y", 1, id="7"),
        LabelledPair("x", "z", 0, kind="number"),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["a", "b", 1]', "expected a JSON object"),
        ('{"a": "x", "label": 1}', "missing field(s) b"),
        ('{"a": "x", "b": "y", "label": 2}', "label must be 0 or 1"),
        ('{"a": "x", "b": "y", "label": "1"}', "label must be 0 or 1"),
        ('{"a": "x", "b": "y", "label": true}', "label must be 0 or 1"),
        ('{"a": 3, "b": "y", "label": 1}', "'a' must be a string"),
    ],
)
def test_read_pairs_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": "ok", "b": "ok", "label": 1}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as info:
        ds.read_pairs_jsonl(path)
    assert f"{path}:2" in str(info.value)
    assert message in str(info.value)


def test_context_cases_round_trip_and_errors(tmp_path: Path) -> None:
    cases = [
        ContextCase(
            cached=[{"role": "user", "content": "What is the tallest mountain?"}],
            new=[
                {"role": "user", "content": "What is the tallest mountain?"},
                {"role": "assistant", "content": "Everest."},
                {"role": "user", "content": "How tall is it?"},
            ],
            label=0,
            kind="followup",
            id="c1",
        )
    ]
    out = tmp_path / "cases.jsonl"
    assert ds.write_context_cases_jsonl(cases, out) == 1
    assert ds.read_context_cases_jsonl(out) == cases

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"cached": [], "new": [{"role": "user", "content": "x"}], "label": 0}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: 'cached' must be a non-empty list"):
        ds.read_context_cases_jsonl(bad)
    bad.write_text('{"cached": [{"content": "x"}], "new": [{"role": "user", "content": "x"}]}\n')
    with pytest.raises(ValueError, match="missing field"):
        ds.read_context_cases_jsonl(bad)


# ---------------------------------------------------------------------------------------------
# public data set loaders, on small synthetic copies of their formats


def test_load_qqp_csv(tmp_path: Path) -> None:
    path = tmp_path / "test.csv"
    path.write_text(
        "question1,question2,is_duplicate\n"
        'How do I learn Go?,"What\'s the best way to learn Go, quickly?",1\n'
        '"A ""quoted""\nmultiline question?",Something else?,0\n',
        encoding="utf-8",
    )
    pairs = ds.load_qqp_csv(path)
    assert [(p.a, p.b, p.label) for p in pairs] == [
        ("How do I learn Go?", "What's the best way to learn Go, quickly?", 1),
        ('A "quoted"\nmultiline question?', "Something else?", 0),
    ]
    path.write_text("q1,q2,label\nx,y,1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="missing column"):
        ds.load_qqp_csv(path)
    path.write_text("question1,question2,is_duplicate\nx,y,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"test\.csv:2: is_duplicate must be 0 or 1"):
        ds.load_qqp_csv(path)


def test_load_gptcache_mock(tmp_path: Path) -> None:
    path = tmp_path / "mock_data.json"
    path.write_text(
        json.dumps([{"origin": "a1", "similar": "b1"}, {"origin": "a2", "similar": "b2"}])
    )
    assert ds.load_gptcache_mock(path) == [
        LabelledPair("a1", "b1", 1, id="mock-1"),
        LabelledPair("a2", "b2", 1, id="mock-2"),
    ]
    path.write_text(json.dumps([{"origin": "a1"}]))
    with pytest.raises(ValueError, match="item 0"):
        ds.load_gptcache_mock(path)


def test_load_gptcache_qqp_tar_both_shapes(tmp_path: Path) -> None:
    full = tmp_path / "similiar_qqp_full.json.gz"
    _write_tar_gz(
        full,
        "examples/benchmark/similiar_qqp_full.json",
        [{"text_a": "x", "text_b": "y", "label": 1}, {"text_a": "x", "text_b": "z", "label": 0}],
    )
    assert [(p.a, p.b, p.label) for p in ds.load_gptcache_qqp_tar(full)] == [
        ("x", "y", 1),
        ("x", "z", 0),
    ]
    positives = tmp_path / "similiar_qqp.json.gz"
    _write_tar_gz(positives, "similiar_qqp.json", [{"origin": "o", "similar": "s"}])
    assert [(p.a, p.b, p.label) for p in ds.load_gptcache_qqp_tar(positives)] == [("o", "s", 1)]
    # a plain gzipped JSON file (not a TAR) is read too
    plain = tmp_path / "plain.json.gz"
    with gzip.open(plain, "wt", encoding="utf-8") as fh:
        json.dump([{"text_a": "p", "text_b": "q", "label": 0}], fh)
    assert [(p.a, p.b, p.label) for p in ds.load_gptcache_qqp_tar(plain)] == [("p", "q", 0)]

    bad = tmp_path / "bad.json.gz"
    _write_tar_gz(bad, "x.json", [{"text_a": "x", "text_b": "y", "label": 3}])
    with pytest.raises(ValueError, match="label must be 0 or 1"):
        ds.load_gptcache_qqp_tar(bad)


def test_load_stsb_thresholds_and_quotes(tmp_path: Path) -> None:
    path = tmp_path / "sts-test.csv"
    rows = [
        "main-captions\tMSRvid\t2012test\t0001\t5.000\tA man plays.\tA man is playing.",
        'main-news\theadlines\t2015\t0002\t0.400\tShe said "no.\tStocks fell "sharply.',
        "main-news\theadlines\t2015\t0003\t3.000\tIn between.\tDropped.",
        "main-forums\tanswer-answer\t2016\t0004\t2.000\tQ one\tQ two\tattr1\tattr2",
        "main-captions\timages\t2014\t0005\t4.000\tA dog runs.\tA dog is running.",
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    pairs = ds.load_stsb(path)
    assert [(p.label, p.kind) for p in pairs] == [
        (1, "main-captions"),
        (0, "main-news"),
        (0, "main-forums"),
        (1, "main-captions"),
    ]
    assert pairs[1].a == 'She said "no.'  # quotes do not merge lines
    assert [p.label for p in ds.load_stsb(path, hit_at=4.5, miss_at=1.0)] == [1, 0]
    with pytest.raises(ValueError, match="below"):
        ds.load_stsb(path, hit_at=2.0, miss_at=3.0)


def _contextual_items() -> list[dict[str, str]]:
    return [
        {
            "Main Query": "What is the tallest mountain in the world?",
            "Main Query Response": "Mount Everest.",
            "Follow-Up Query": "What mountain range is it part of?",
            "Follow Up Query Response": "The Himalayas.",
        },
        {
            "Main Query": "Who painted the Mona Lisa?",
            "Main Query Response": "Leonardo da Vinci.",
            "Follow-Up Query": "When did he paint it?",
            "Follow Up Query Response": "Around 1503-1519.",
        },
        {
            "Main Query": "Who painted the Mona Lisa?",
            "Main Query Response": "Leonardo da Vinci painted it.",
            "Follow-Up Query": "Where is it displayed?",
            "Follow Up Query Response": "The Louvre.",
        },
    ]


def test_load_contextual_queries(tmp_path: Path) -> None:
    path = tmp_path / "contextual_queries.json"
    items = _contextual_items()
    path.write_text(json.dumps(items), encoding="utf-8")
    cases = ds.load_contextual_queries(path)
    assert len(cases) == 3
    assert all(c.label == 0 and c.kind == "followup_vs_main" for c in cases)
    first = cases[0]
    assert first.cached == [{"role": "user", "content": items[0]["Main Query"]}]
    assert [m["role"] for m in first.new] == ["user", "assistant", "user"]
    assert first.new[-1]["content"] == items[0]["Follow-Up Query"]

    both = ds.load_contextual_queries(path, other_context=True)
    other = [c for c in both if c.kind == "followup_other_context"]
    assert len(both) == 6 and len(other) == 3
    for case in other:
        # same last user message, different context
        assert case.cached[-1] == case.new[-1]
        assert case.cached[0]["content"] != case.new[0]["content"]

    path.write_text(json.dumps([{"Main Query": "x"}]), encoding="utf-8")
    with pytest.raises(ValueError, match="item 0"):
        ds.load_contextual_queries(path)


def test_load_arena_prompts_and_hard_pairs(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt_id": f"arena_{i}", "prompt": p, "language": "English"}) + "\n"
            for i, p in enumerate(["first", "second", "third"])
        ),
        encoding="utf-8",
    )
    assert ds.load_arena_prompts(prompts) == ["first", "second", "third"]

    questions = tmp_path / "question.jsonl"
    rows = [("q1", "c1", "alpha"), ("q2", "c2", "beta"), ("q3", "c1", "gamma"), ("q4", "c2", "d")]
    questions.write_text(
        "".join(
            json.dumps({"question_id": q, "cluster": c, "turns": [{"content": t}]}) + "\n"
            for q, c, t in rows
        ),
        encoding="utf-8",
    )
    assert ds.load_arena_hard_pairs(questions) == [
        LabelledPair("alpha", "gamma", 0, kind="topical", id="q1:q3"),
        LabelledPair("beta", "d", 0, kind="topical", id="q2:q4"),
    ]


def test_training_pairs_excludes_test_pairs_unordered(tmp_path: Path) -> None:
    full = tmp_path / "full.json.gz"
    _write_tar_gz(
        full,
        "similiar_qqp_full.json",
        [
            {"text_a": "How  do I cook rice?", "text_b": "Best way to cook rice?", "label": 1},
            {"text_a": "Keep", "text_b": "Me", "label": 0},
            {"text_a": "Swapped b", "text_b": "Swapped a", "label": 0},
            {"text_a": "Also keep", "text_b": "this one", "label": 1},
        ],
    )
    test_csv = tmp_path / "test.csv"
    test_csv.write_text(
        "question1,question2,is_duplicate\n"
        "How do I cook rice?,Best way to cook rice? ,1\n"
        "Swapped a,Swapped b,0\n",
        encoding="utf-8",
    )
    train = ds.training_pairs(full, test_csv)
    assert [(p.a, p.b) for p in train] == [("Keep", "Me"), ("Also keep", "this one")]
    assert ds.training_pairs(full, test_csv) == train  # deterministic


def test_convert_to_pairs(tmp_path: Path) -> None:
    src = tmp_path / "mock.json"
    src.write_text(json.dumps([{"origin": "a", "similar": "b"}]), encoding="utf-8")
    out = tmp_path / "out" / "pairs.jsonl"
    assert ds.convert_to_pairs("gptcache-mock", src, out) == 1
    assert ds.read_pairs_jsonl(out) == [LabelledPair("a", "b", 1, id="mock-1")]
    assert set(ds.CONVERT_SOURCES) == {
        "qqp-csv",
        "gptcache-mock",
        "gptcache-tar",
        "stsb",
        "arena-hard",
    }
    with pytest.raises(ValueError, match="unknown source"):
        ds.convert_to_pairs("nope", src, out)


def test_data_dir_and_missing_file_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ds.SHARED_DATA_ENV, str(tmp_path))
    assert ds.shared_data_dir() == tmp_path
    other = tmp_path / "other"
    other.mkdir()
    assert ds.shared_data_dir(other) == other  # the option wins over the environment
    with pytest.raises(FileNotFoundError) as info:
        ds.shared_set_path("qqp-test", tmp_path)
    assert str(tmp_path / "meancache-qqp" / "test.csv") in str(info.value)
    assert ds.SHARED_DATA_ENV in str(info.value) and "--shared-data" in str(info.value)
    with pytest.raises(ValueError, match="unknown shared data set"):
        ds.shared_set_path("nope", tmp_path)


def test_shared_data_dir_is_never_guessed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No option and no $SEMCACHE_SHARED_DATA: an error naming both, not a path near the package.
    monkeypatch.delenv(ds.SHARED_DATA_ENV, raising=False)
    with pytest.raises(ConfigError, match=r"give --data DIR or set \$SEMCACHE_SHARED_DATA"):
        ds.shared_data_dir(option="--data")
    with pytest.raises(ConfigError, match="does not exist"):
        ds.shared_data_dir(tmp_path / "missing")
    monkeypatch.setenv(ds.SHARED_DATA_ENV, str(tmp_path / "gone"))
    with pytest.raises(ConfigError, match=r"gone does not exist \(from \$SEMCACHE_SHARED_DATA\)"):
        ds.shared_data_dir()


# ---------------------------------------------------------------------------------------------
# the hand-written hard-pair set (ships with the repo)


def test_hard_pairs_set() -> None:
    pairs = ds.read_pairs_jsonl(HARD_PAIRS)
    assert len(pairs) >= 360
    labels = Counter(p.label for p in pairs)
    assert labels[0] >= 180 and labels[1] >= 180
    assert all(p.a.strip() and p.b.strip() and p.a != p.b for p in pairs)
    keys = [frozenset((" ".join(p.a.split()), " ".join(p.b.split()))) for p in pairs]
    assert len(set(keys)) == len(keys), "duplicate (a, b) pairs"
    assert len({p.id for p in pairs}) == len(pairs)
    negative_kinds = {"number", "direction", "negation", "entity", "constraint", "scope", "antonym"}
    positive_kinds = {"reword", "typo", "terse_verbose", "synonym", "reorder"}
    for p in pairs:
        assert p.kind in (negative_kinds if p.label == 0 else positive_kinds), p


# ---------------------------------------------------------------------------------------------
# the real shared files (skipped when ../shared/data or $SEMCACHE_SHARED_DATA is absent)


def test_real_qqp_test_csv() -> None:
    pairs = ds.load_qqp_csv(_shared("qqp-test"))
    assert len(pairs) == 9042
    assert Counter(p.label for p in pairs) == {0: 4521, 1: 4521}


def test_real_qqp_full_and_training_split() -> None:
    full_path, test_path = _shared("qqp-full"), _shared("qqp-test")
    full = ds.load_gptcache_qqp_tar(full_path)
    assert len(full) == 80854
    assert Counter(p.label for p in full) == {0: 50713, 1: 30141}
    train = ds.training_pairs(full_path, test_path)
    assert 0 < len(train) < len(full)
    test_keys = {ds.pair_key(p.a, p.b) for p in ds.load_qqp_csv(test_path)}
    assert not any(ds.pair_key(p.a, p.b) in test_keys for p in train)
    assert len(full) - len(train) >= len(test_keys)


def test_real_qqp_positives_tar() -> None:
    pairs = ds.load_gptcache_qqp_tar(_shared("qqp-positives"))
    assert len(pairs) == 30141 and all(p.label == 1 for p in pairs)


def test_real_gptcache_mock() -> None:
    pairs = ds.load_gptcache_mock(_shared("gptcache-mock"))
    assert len(pairs) == 999 and all(p.label == 1 for p in pairs)


def test_real_stsb() -> None:
    pairs = ds.load_stsb(_shared("stsb-test"))
    assert Counter(p.label for p in pairs) == {1: 338, 0: 534}
    assert {p.kind for p in pairs} == {"main-captions", "main-news", "main-forums"}


def test_real_contextual_queries() -> None:
    cases = ds.load_contextual_queries(_shared("contextual-queries"))
    assert len(cases) == 128
    assert all(c.label == 0 and len(c.new) == 3 and len(c.cached) == 1 for c in cases)
    assert len(ds.load_contextual_queries(_shared("contextual-queries"), other_context=True)) == 256


def test_real_arena() -> None:
    prompts = ds.load_arena_prompts(_shared("arena-prompts"))
    assert len(prompts) == 5000
    pairs = ds.load_arena_hard_pairs(_shared("arena-hard"))
    assert len(pairs) == 250 and all(p.label == 0 and p.kind == "topical" for p in pairs)
