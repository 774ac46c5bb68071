"""Bulk ingestion: ``semcache import FILE.jsonl`` on real files and a real SQLite store, the
entries it writes served by a real ``semcache serve`` (cache-aside and the proxy with the
openai SDK), ``POST /v1/cache/store/batch`` on both backends, and ``put_many`` all or nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from postgres_helpers import PgDatabase
from proxy_fixtures import KEY, semcache_in_front_of
from servers import REPO, ServerProcess
from simulator_helpers import RunningSimulator

from semcache.embed.runtime import default_models_dir
from semcache.errors import StorageError
from semcache.store import CacheStore, NewEntry, Partition, SqlFaissStore
from semcache.store.postgres import PostgresStore

TENANT = "proxy-tenant"  # the tenant of proxy_fixtures.KEY
AUTH = {"Authorization": f"Bearer {KEY}"}
ROTATE = "How do I rotate my API keys safely?"
TCP = "Explain the difference between TCP and UDP."


def completion(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-imported",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
    }


CHAT_REQUEST = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": TCP}]}
# Line numbers are the file's (1-based); line 4 is blank and ignored.
LINES: list[Any] = [
    {
        "query": ROTATE,
        "response": {"answer": "Create a new key, deploy it, revoke the old."},
        "model": "gpt-4o-mini",
        "metadata": {"source": "faq"},
    },
    {
        "query": "What is our refund policy?",
        "response": "30 days",
        "model": "gpt-4o-mini",
        "namespace": "billing",
        "ttl_s": 3600,
    },
    "not json",
    "",
    {"query": "", "response": "x", "model": "gpt-4o-mini"},
    {"query": "a record without a model", "response": "x"},
    {"request": CHAT_REQUEST, "response": completion("TCP is reliable and ordered; UDP is not.")},
    {"request": {**CHAT_REQUEST, "n": 2}, "response": completion("two answers")},
    {"request": CHAT_REQUEST, "response": {"object": "text_completion"}},
    [1, 2],
    {"query": "negative ttl", "response": "x", "model": "gpt-4o-mini", "ttl_s": -5},
    {"request": {"model": "gpt-4o-mini", "messages": "hi"}, "response": completion("x")},
]
BAD = {
    3: "not valid JSON",
    5: "query must not be empty",
    6: "model: Field required",
    8: "the proxy never caches this request (n > 1",
    9: 'expected a chat completion ("object": "chat.completion")',
    10: "expected a JSON object, got list",
    11: "ttl_s must be a positive number",
    12: "request: messages must be a non-empty array",
}


def write_lines(path: Path, lines: list[Any]) -> Path:
    text = [line if isinstance(line, str) else json.dumps(line) for line in lines]
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return path


def run_import(*args: str | Path) -> subprocess.CompletedProcess[str]:
    # The ONNX export every test server shares, not a fresh one per data dir.
    env = {**os.environ, "SEMCACHE_MODELS_DIR": str(default_models_dir())}
    return subprocess.run(
        [sys.executable, "-m", "semcache", "import", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def entry_count(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "semcache.db") as conn:
        return int(conn.execute("SELECT count(*) FROM entries").fetchone()[0])


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir the mixed file was imported into (skip mode, chunks of 2 lines)."""
    base = tmp_path_factory.mktemp("import")
    source = write_lines(base / "mixed.jsonl", LINES)
    data = base / "data"
    done = run_import(source, "--data-dir", data, "--tenant", TENANT, "--batch-size", "2")
    assert done.returncode == 0, done.stderr
    assert "imported 3 entries, skipped 8 bad lines" in done.stdout
    reported = [line for line in done.stderr.splitlines() if line.startswith("line ")]
    assert [int(line.split(":")[0].split()[1]) for line in reported] == sorted(BAD)
    for line in reported:
        number = int(line.split(":")[0].split()[1])
        assert BAD[number] in line, line
    return data


def test_skip_mode_writes_the_good_lines(imported: Path) -> None:
    assert entry_count(imported) == 3
    with sqlite3.connect(imported / "semcache.db") as conn:
        rows = conn.execute("SELECT tenant, namespace, model, query FROM entries ORDER BY row_id")
        assert rows.fetchall() == [
            (TENANT, "", "gpt-4o-mini", ROTATE),
            (TENANT, "billing", "gpt-4o-mini", "What is our refund policy?"),
            # An OpenAI log line is partitioned as the proxy partitions that request.
            (TENANT, "", "openai:gpt-4o-mini", TCP),
        ]


def test_abort_mode_writes_nothing_and_fails(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "mixed.jsonl", LINES)
    data = tmp_path / "data"
    done = run_import(source, "--data-dir", data, "--on-error", "abort")
    assert done.returncode == 1
    assert "aborted: 8 bad lines" in done.stdout and "nothing was imported" in done.stdout
    for number in BAD:
        assert f"line {number}: " in done.stderr
    assert not (data / "semcache.db").exists() or entry_count(data) == 0


def test_abort_mode_imports_a_clean_file(tmp_path: Path) -> None:
    rows = [{"query": f"question number {n}", "response": n} for n in range(5)]
    source = write_lines(tmp_path / "clean.jsonl", rows)
    done = run_import(
        source, "--data-dir", tmp_path, "--on-error", "abort", "--model", "m", "--quiet"
    )
    assert done.returncode == 0, done.stderr
    assert "imported 5 entries, skipped 0 bad lines" in done.stdout
    assert entry_count(tmp_path) == 5


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    done = run_import(tmp_path / "absent.jsonl", "--data-dir", tmp_path)
    assert done.returncode == 2
    assert "absent.jsonl: no such file" in done.stderr


@pytest.fixture(scope="module")
def server(sim: RunningSimulator, imported: Path) -> Iterator[ServerProcess]:
    with semcache_in_front_of(sim, imported) as running:
        yield running


def lookup(server: ServerProcess, **body: Any) -> dict[str, Any]:
    body.setdefault("model", "gpt-4o-mini")
    r = httpx.post(server.url + "/v1/cache/lookup", json=body, headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_an_imported_record_is_an_exact_hit_and_a_rewording_a_semantic_one(
    server: ServerProcess,
) -> None:
    exact = lookup(server, query=ROTATE)
    assert exact["status"] == "HIT-EXACT"
    assert exact["entry"]["response"] == {"answer": "Create a new key, deploy it, revoke the old."}
    assert exact["entry"]["metadata"] == {"source": "faq"}
    reworded = lookup(server, query="How can I safely rotate my API keys?")
    assert reworded["status"] == "HIT-SEMANTIC"
    assert reworded["entry"]["id"] == exact["entry"]["id"]
    refund = lookup(server, query="What is our refund policy?", namespace="billing")
    assert refund["status"] == "HIT-EXACT"


def test_an_imported_chat_log_line_answers_the_same_request_through_the_proxy(
    server: ServerProcess, sim: RunningSimulator
) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=30)
    before = sim.stats()["requests"]
    raw = client.chat.completions.with_raw_response.create(**CHAT_REQUEST)
    answer = raw.parse()
    assert raw.headers["x-semcache-status"] == "HIT-EXACT"
    assert answer.choices[0].message.content == "TCP is reliable and ordered; UDP is not."
    assert answer.model == "gpt-4o-mini" and answer.id != "chatcmpl-imported"
    assert answer.usage is not None and answer.usage.total_tokens == 18
    assert sim.stats()["requests"] == before  # never went upstream


def test_an_import_beside_the_running_server_is_found_semantically_without_a_restart(
    server: ServerProcess, imported: Path, tmp_path: Path
) -> None:
    query, reworded = "How do I cancel my subscription?", "How can I cancel my subscription?"
    assert lookup(server, query=reworded)["status"] == "MISS"
    record = {
        "query": query,
        "response": {"answer": "Settings, then Billing."},
        "model": "gpt-4o-mini",
    }
    done = run_import(
        write_lines(tmp_path / "more.jsonl", [record]), "--data-dir", imported, "--tenant", TENANT
    )
    assert done.returncode == 0, done.stderr
    assert "imported 1 entries" in done.stdout
    # The server owns the index files; the import left them to it and said so.
    assert "belong to pid" in done.stderr, done.stderr
    deadline = time.monotonic() + 15
    while (answer := lookup(server, query=reworded))["status"] != "HIT-SEMANTIC":
        assert time.monotonic() < deadline, f"not found semantically: {answer}"
        time.sleep(0.2)
    assert answer["entry"]["response"] == {"answer": "Settings, then Billing."}


# -- POST /v1/cache/store/batch --------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def batch_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp(f"batch-{request.param}")
    env = {"SEMCACHE_API_KEYS": "sk-batch-a=tenant-a,sk-batch-b=tenant-b"}
    if request.param == "postgres":
        database: PgDatabase = request.getfixturevalue("pg_database")
        database.reset()
        env["SEMCACHE_DATABASE_URL"] = database.url
    server = ServerProcess(
        ["serve", "--data-dir", str(data)], env=env, log_path=data / "server.log"
    )
    with server:
        yield server


def post(server: ServerProcess, path: str, body: Any, key: str = "sk-batch-a") -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(server.url + path, json=body, headers=headers, timeout=60)


def test_batch_store_answers_each_entry_in_order(batch_server: ServerProcess) -> None:
    items = [
        {"query": "How do I export my invoices?", "response": {"n": 0}, "model": "m1"},
        {
            "query": "Where is the billing page?",
            "response": {"n": 1},
            "model": "m1",
            "namespace": "docs",
            "ttl_s": 60,
            "metadata": {"from": "batch"},
        },
        {"query": "How do I export my invoices?", "response": {"n": 2}, "model": "m1"},
    ]
    r = post(batch_server, "/v1/cache/store/batch", {"entries": items})
    assert r.status_code == 201, r.text
    stored = r.json()["entries"]
    assert len(stored) == 3
    # The same request twice in one batch: one entry, holding the last answer, for both.
    assert stored[0]["id"] == stored[2]["id"] != stored[1]["id"]
    for item, answer in zip(items, stored, strict=True):
        entry = httpx.get(
            f"{batch_server.url}/v1/cache/entries/{answer['id']}",
            headers={"Authorization": "Bearer sk-batch-a"},
        ).json()
        assert entry["query"] == item["query"] and entry["model"] == "m1"
        assert entry["expires_at"] == answer["expires_at"]
    docs = post(
        batch_server,
        "/v1/cache/lookup",
        {"query": "Where is the billing page?", "model": "m1", "namespace": "docs"},
    ).json()
    assert (docs["status"], docs["entry"]["metadata"]) == ("HIT-EXACT", {"from": "batch"})
    again = post(
        batch_server, "/v1/cache/lookup", {"query": "How do I export my invoices?", "model": "m1"}
    ).json()
    assert again["entry"]["response"] == {"n": 2}
    # Another tenant's key never sees them.
    other = post(
        batch_server,
        "/v1/cache/lookup",
        {"query": "How do I export my invoices?", "model": "m1"},
        key="sk-batch-b",
    ).json()
    assert other["status"] == "MISS"


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        ({"query": "", "response": "x", "model": "m1"}, "entries.1.query"),
        ({"query": "q", "response": "x", "model": "m1", "ttl_s": 0}, "entries.1.ttl_s"),
        ({"query": "q", "model": "m1"}, "entries.1.response"),
        ({"query": "q", "response": "x", "model": "m1", "colour": "red"}, "entries.1.colour"),
    ],
)
def test_a_bad_batch_item_is_a_400_naming_it_and_nothing_is_written(
    batch_server: ServerProcess, bad: dict[str, Any], where: str
) -> None:
    good = {"query": f"a good item beside {where}", "response": "ok", "model": "m1"}
    r = post(batch_server, "/v1/cache/store/batch", {"entries": [good, bad]})
    assert r.status_code == 400, r.text
    assert where in r.json()["error"]["message"]
    missed = post(batch_server, "/v1/cache/lookup", {"query": good["query"], "model": "m1"})
    assert missed.json()["status"] != "HIT-EXACT"


def test_a_batch_over_the_cap_is_refused(batch_server: ServerProcess) -> None:
    items = [{"query": f"q{n}", "response": n, "model": "cap"} for n in range(1001)]
    r = post(batch_server, "/v1/cache/store/batch", {"entries": items})
    assert r.status_code == 400
    assert "entries: List should have at most 1000 items" in r.json()["error"]["message"]
    assert post(batch_server, "/v1/cache/store/batch", {"entries": []}).json() == {"entries": []}


# -- put_many, all or nothing ------------------------------------------------------------------

DIM = 8
P = Partition("acme", "", "m", "")


def new(n: int, *, entry_id: str | None = None, key: str | None = None) -> NewEntry:
    vector = np.random.default_rng(n).standard_normal(DIM).astype(np.float32)
    return NewEntry(
        entry_id=entry_id or f"e{n}",
        partition=P,
        exact_key=key or f"k{n}",
        context_hash="ctx",
        query=f"query {n}",
        response={"n": n},
        embedding=vector / np.linalg.norm(vector),
        created_at=1000.0,
        expires_at=2000.0,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CacheStore]:
    opened: CacheStore
    if request.param == "sqlite":
        opened = SqlFaissStore(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "faiss", DIM)
    else:
        database: PgDatabase = request.getfixturevalue("pg_database")
        database.reset()
        opened = PostgresStore(database.url, DIM)
    yield opened
    opened.close()


def test_put_many_writes_a_batch_in_order_and_replaces_known_keys(store: CacheStore) -> None:
    store.put(new(1), max_entries=100)
    batch = [new(2), new(3), dataclasses.replace(new(4), exact_key="k1"), new(5)]
    stored, evicted = store.put_many(batch, max_entries=100)
    assert [e.entry_id for e in stored] == ["e2", "e3", "e4", "e5"] and evicted == 0
    assert [e.row_id for e in stored] == sorted(e.row_id for e in stored)
    assert store.count_entries() == 4
    assert store.get("acme", "e1") is None  # replaced by e4, which has its key
    found = store.search(P, new(3).embedding, context_hash="ctx", now=1500.0, k=1)
    assert [c.entry.entry_id for c in found] == ["e3"]
    _, evicted = store.put_many([new(6), new(7)], max_entries=4)
    assert evicted == 2 and store.count_entries() == 4


def test_put_many_writes_nothing_when_a_row_fails(store: CacheStore) -> None:
    store.put(new(1), max_entries=100)
    # The third row reuses a public id: the database refuses it, and with it the batch.
    batch = [new(2), new(3), new(4, entry_id="e1")]
    with pytest.raises(StorageError):
        store.put_many(batch, max_entries=100)
    assert store.count_entries() == 1
    assert store.get_exact("acme", "k2", now=1500.0) is None
    found = store.search(P, new(2).embedding, context_hash="ctx", now=1500.0, k=4)
    assert [c.entry.entry_id for c in found] == ["e1"]
