"""Store reliability: ids, index repair, reads under a write lock, disk space (a damaged
database: test_reliability_damaged_store.py).

Real ``semcache serve`` processes on real data dirs (SQLite in WAL mode + FAISS files), and the
``SqlFaissStore`` class on a real SQLite file where that is simpler.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import httpx
import numpy as np
import pytest
from data_dir_helpers import db_rows, lookup, store, wait_for
from servers import ServerProcess
from store_entries import PARTITION, numbered_entry, unit_vector

from semcache.store import NewEntry, SqlFaissStore

DIM = 384  # the bundled all-MiniLM-L6-v2

X_QUERY, X_ANSWER = "How do I reset my password?", {"answer": "X"}
Y_QUERY, Y_ANSWER = "What is the capital of Australia?", {"answer": "Y"}
# Cosine of the Y rewording to Y is ~0.85, under the cosine decision's default 0.9: the lookups
# ask for 0.8 so that a healthy store hits it under both decisions (the verifier accepts it).
Y_REWORDED = "what's the capital city of australia"
X_REWORDED = "how can I reset my password"
LOOKUP_THRESHOLD = 0.8


# -- 1. ids are never reused; a crash never points the index at another entry's answer --------


@pytest.mark.parametrize("decision", ["cosine", "verified"])
def test_deleted_id_is_not_reused_and_crash_never_serves_another_answer(
    tmp_path: Path, decision: str
) -> None:
    # The index is saved on a timer. The sequence needs a save holding X, then DELETE X and
    # store Y with no save in between, then SIGKILL: the file on disk then still holds X's
    # vector under X's row id. The interval is 1 s (not shorter) and the test starts right
    # after a save lands, so no save can fall between the DELETE and the kill.
    env = {"SEMCACHE_HIT_DECISION": decision, "SEMCACHE_INDEX_SAVE_INTERVAL_S": "1.0"}
    args = ["serve", "--data-dir", str(tmp_path)]
    db = tmp_path / "semcache.db"
    index_dir = tmp_path / "faiss"

    server = ServerProcess(args, env=env, log_path=tmp_path / "server.log").start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            r = store(client, X_QUERY, X_ANSWER)
            assert r.status_code == 201, r.text
            x_id = r.json()["id"]
            (x_row,) = db_rows(db, "SELECT row_id FROM entries")
            wait_for(lambda: any(index_dir.glob("*.faiss")), 15, "an index save holding X")
            assert client.delete(f"/v1/cache/entries/{x_id}").status_code == 200
            r = store(client, Y_QUERY, Y_ANSWER)
            assert r.status_code == 201, r.text
            y_id = r.json()["id"]
    finally:
        server.kill()  # SIGKILL: no shutdown save of the index

    again = ServerProcess(args, env=env, log_path=tmp_path / "server.log")
    with again, httpx.Client(base_url=again.url, timeout=30) as client:
        y_reworded = lookup(client, Y_REWORDED, threshold=LOOKUP_THRESHOLD)
        x_reworded = lookup(client, X_REWORDED, threshold=LOOKUP_THRESHOLD)
        x_exact = lookup(client, X_QUERY, threshold=LOOKUP_THRESHOLD)
    rows = db_rows(db, "SELECT row_id, entry_id, query FROM entries")

    def seen(result: dict[str, Any]) -> tuple[Any, ...]:
        entry = result["entry"] or {}
        return result["status"], result["similarity"], entry.get("id"), entry.get("response")

    observed = (
        f"decision={decision}; X row_id={x_row[0]}; rows after restart={rows}; "
        f"Y reworded -> {seen(y_reworded)}; X reworded -> {seen(x_reworded)}; "
        f"X exact -> {seen(x_exact)}"
    )
    # X was deleted: nothing about X may hit, least of all with Y's answer.
    for result in (x_reworded, x_exact):
        assert result["status"] == "MISS" and not result["hit"], observed
        assert result["entry"] is None, observed
    # Y is findable by a rewording after the crash, and serves Y's own answer.
    assert y_reworded["status"] == "HIT-SEMANTIC", observed
    assert y_reworded["entry"]["id"] == y_id, observed
    assert y_reworded["entry"]["response"] == Y_ANSWER, observed
    # Ids are never reused: Y got a row id above deleted X's.
    assert [(entry_id, query) for _, entry_id, query in rows] == [(y_id, Y_QUERY)], observed
    assert rows[0][0] > x_row[0], observed


# -- 2. an index file with wrong vectors under the right ids is repaired on start --------------

P = PARTITION


def _unit(seed: int) -> np.ndarray:
    return unit_vector(seed, DIM)


def _entry(n: int) -> NewEntry:
    return numbered_entry(n, DIM, expires_at=1_000_000.0)


def _open(tmp_path: Path) -> SqlFaissStore:
    return SqlFaissStore(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "faiss", DIM)


@pytest.mark.parametrize("damage", ["permuted", "random"])
def test_index_file_with_wrong_vectors_is_repaired_on_start(tmp_path: Path, damage: str) -> None:
    store = _open(tmp_path)
    for n in range(80):
        store.put(_entry(n), max_entries=1000)
    store.close()
    path = tmp_path / "faiss" / f"{P.key}.faiss"
    saved = faiss.read_index(str(path))
    ids = faiss.vector_to_array(saved.id_map).astype(np.int64)
    assert len(ids) == 80
    vectors = faiss.downcast_index(saved.index).reconstruct_n(0, saved.ntotal)
    if damage == "permuted":
        # Every vector filed under its neighbour's id: right ids, right norms, wrong rows.
        wrong = np.roll(vectors, 1, axis=0)
    else:
        wrong = np.vstack([_unit(10_000 + i) for i in range(len(ids))])
    bad = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    bad.add_with_ids(np.ascontiguousarray(wrong, dtype=np.float32), ids)
    faiss.write_index(bad, str(path))

    store = _open(tmp_path)
    try:
        assert store.vectors.size(P.key) == 80
        wrong_top = {}
        for n in range(80):
            found = store.search(P, _unit(n), context_hash="ctx", now=1001.0, k=4)
            top = (found[0].entry.entry_id, round(found[0].similarity, 4)) if found else None
            if top is None or top[0] != f"e{n}" or abs(top[1] - 1.0) > 1e-4:
                wrong_top[f"e{n}"] = top
        assert not wrong_top, (
            f"{len(wrong_top)} of 80 entries not found by their own vector after reopening "
            f"(expected -> top candidate): {dict(list(wrong_top.items())[:5])}; "
            f"reconcile report {getattr(store, 'reconcile_report', None)}"
        )
    finally:
        store.close()


# -- 3. reads never wait behind writes; 5. readiness and free disk space -----------------------


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("reliability-server")
    server = ServerProcess(["serve", "--data-dir", str(data)], log_path=data / "server.log")
    with server:
        yield server


def _data_dir(server: ServerProcess) -> Path:
    return Path(server.args[server.args.index("--data-dir") + 1])


def test_readyz_is_ready_by_default(plain_server: ServerProcess) -> None:
    r = httpx.get(plain_server.url + "/readyz", timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ready"


def test_readyz_unavailable_when_free_disk_is_below_the_minimum(tmp_path: Path) -> None:
    env = {"SEMCACHE_MIN_FREE_DISK_MB": "1000000000"}  # a petabyte: no disk has that free
    server = ServerProcess(
        ["serve", "--data-dir", str(tmp_path)], env=env, log_path=tmp_path / "server.log"
    )
    with server:
        r = httpx.get(server.url + "/readyz", timeout=10)
    assert r.status_code == 503, f"{r.status_code} {r.text}"
    body = r.json()
    assert body["status"] == "unavailable", body
    assert re.search(r"disk|free|space", body["reason"], re.IGNORECASE), body


def test_reads_never_wait_behind_a_held_write_lock(plain_server: ServerProcess) -> None:
    db = _data_dir(plain_server) / "semcache.db"
    before_query = "What is your refund policy for annual plans?"
    with httpx.Client(base_url=plain_server.url, timeout=30) as client:
        r = store(client, before_query, {"answer": "refund"})
        assert r.status_code == 201, r.text
        entry_id = r.json()["id"]
        assert lookup(client, before_query)["status"] == "HIT-EXACT"

    # Another process (here: this one) holds SQLite's write lock for ~8 s.
    lock = sqlite3.connect(db, timeout=0, isolation_level=None, check_same_thread=False)
    deadline = time.monotonic() + 10
    while True:
        try:
            lock.execute("BEGIN EXCLUSIVE")
            break
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    locked_at = time.monotonic()
    released = threading.Event()

    def release() -> None:
        time.sleep(max(0.0, locked_at + 8.0 - time.monotonic()))
        lock.execute("ROLLBACK")
        released.set()

    releaser = threading.Thread(target=release)
    releaser.start()

    writes: dict[int, tuple[Any, float]] = {}

    def write(n: int) -> None:
        started = time.monotonic()
        with httpx.Client(base_url=plain_server.url, timeout=30) as c:
            try:
                result: Any = store(c, f"How do I configure webhook {n} for team {n}?", {"n": n})
            except httpx.HTTPError as exc:
                result = exc
        writes[n] = (result, time.monotonic() - started)

    # Eight writers here (2 cores); more where asyncio's default thread pool is larger, so
    # that blocked writes could fill it whatever the machine.
    n_writers = max(8, (os.cpu_count() or 1) + 6)
    writers = [threading.Thread(target=write, args=(n,)) for n in range(n_writers)]
    try:
        for t in writers:
            t.start()
        time.sleep(1.5)  # every writer is now queued behind the lock
        reads: dict[str, tuple[Any, float, bool]] = {}
        with httpx.Client(base_url=plain_server.url, timeout=30) as client:
            started = time.monotonic()
            r = client.post("/v1/cache/lookup", json={"query": before_query, "model": "m"})
            reads["lookup"] = (r, time.monotonic() - started, released.is_set())
            started = time.monotonic()
            r = client.get(f"/v1/cache/entries/{entry_id}")
            reads["get"] = (r, time.monotonic() - started, released.is_set())
    finally:
        releaser.join(30)
        for t in writers:
            t.join(30)
        lock.close()

    looked_up, lookup_s, lookup_after_release = reads["lookup"]
    assert looked_up.status_code == 200, looked_up.text
    assert looked_up.json()["status"] == "HIT-EXACT", looked_up.text
    assert lookup_s < 1.0 and not lookup_after_release, (
        f"exact lookup under a held write lock took {lookup_s:.2f} s "
        f"(answered after the lock was released: {lookup_after_release})"
    )
    got, got_s, got_after_release = reads["get"]
    assert got.status_code == 200, got.text
    assert got_s < 1.0 and not got_after_release, (
        f"GET entry under a held write lock took {got_s:.2f} s"
    )

    assert sorted(writes) == list(range(n_writers)), f"writers still running: {writes}"
    for n, (result, seconds) in sorted(writes.items()):
        assert isinstance(result, httpx.Response), (
            f"store {n} failed after {seconds:.1f} s: {result}"
        )
        assert result.status_code in (201, 503), f"store {n}: {result.status_code} {result.text}"
        if result.status_code == 503:
            assert set(result.json()["error"]) >= {"type", "message", "code"}, result.text
        assert seconds < 15, f"store {n} took {seconds:.1f} s"

    with httpx.Client(base_url=plain_server.url, timeout=30) as client:
        r = store(client, "How do I rotate my API key after the lock?", {"answer": "rotate"})
        assert r.status_code == 201, r.text


def test_an_exact_hit_sees_another_process_change_or_delete_its_entry(
    plain_server: ServerProcess,
) -> None:
    query = "Which regions does the enterprise plan cover?"
    with httpx.Client(base_url=plain_server.url, timeout=30) as client:
        r = store(client, query, {"answer": "EU and US"})
        assert r.status_code == 201, r.text
        entry_id = r.json()["id"]
        first = lookup(client, query)
        assert first["status"] == "HIT-EXACT" and first["entry"]["response"] == {
            "answer": "EU and US"
        }

        # Another process (here: this one) rewrites the answer in the same file, then deletes
        # the entry: the server's very next exact lookups follow each commit.
        db = sqlite3.connect(_data_dir(plain_server) / "semcache.db", timeout=10)
        with db:
            db.execute(
                "UPDATE entries SET response = ? WHERE entry_id = ?",
                ('{"answer": "EU, US and APAC"}', entry_id),
            )
        changed = lookup(client, query)
        assert changed["status"] == "HIT-EXACT"
        assert changed["entry"]["response"] == {"answer": "EU, US and APAC"}
        with db:
            db.execute("DELETE FROM entries WHERE entry_id = ?", (entry_id,))
        db.close()
        gone = lookup(client, query)
        assert gone["status"] == "MISS" and gone["entry"] is None, gone
