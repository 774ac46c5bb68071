"""SIGKILL in the middle of a store burst loses no acknowledged entry and leaves no torn one."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import httpx
from servers import ServerProcess

KEY = "sk-durable"
HEADERS = {"Authorization": f"Bearer {KEY}"}
TOPICS = ["billing", "passwords", "exports", "webhooks", "invoices", "SSO", "quotas", "backups"]


def probe(writer: int, n: int) -> str:
    return f"How do I set up {TOPICS[n % len(TOPICS)]} for team {writer}, case {n}?"


def test_sigkill_mid_burst(tmp_path: Path) -> None:
    env = {"SEMCACHE_API_KEYS": f"{KEY}=durable"}
    args = ["serve", "--data-dir", str(tmp_path)]
    server = ServerProcess(args, env=env, log_path=tmp_path / "server.log").start()
    acked: dict[str, tuple[str, dict[str, int]]] = {}
    sent: set[str] = set()
    lock = threading.Lock()
    enough = threading.Event()

    def write(writer: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for n in range(10_000):
                query, response = probe(writer, n), {"writer": writer, "n": n}
                with lock:
                    sent.add(query)
                body = {"query": query, "model": "m", "response": response}
                try:
                    r = client.post("/v1/cache/store", json=body, headers=HEADERS)
                except httpx.HTTPError:
                    return  # the server died under us: this store was never acknowledged
                assert r.status_code == 201, r.text
                with lock:
                    acked[query] = (r.json()["id"], response)
                    if len(acked) >= 60:
                        enough.set()

    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in writers:
        t.start()
    assert enough.wait(120), "the burst never got going"
    server.kill()  # SIGKILL while the writers are mid-request
    for t in writers:
        t.join(30)
    assert len(acked) >= 60

    # No torn rows: every row is complete, decodes, and belongs to a store we sent.
    with sqlite3.connect(tmp_path / "semcache.db") as conn:
        rows = conn.execute("SELECT query, response, embedding FROM entries").fetchall()
    assert len(rows) >= len(acked)
    for query, response, embedding in rows:
        assert query in sent
        assert json.loads(response)["n"] >= 0
        assert len(embedding) == 384 * 4

    again = ServerProcess(args, env=env, log_path=tmp_path / "server.log")
    with again, httpx.Client(base_url=again.url, timeout=30) as client:
        for entry_id, response in acked.values():
            r = client.get(f"/v1/cache/entries/{entry_id}", headers=HEADERS)
            assert r.status_code == 200, f"acknowledged entry {entry_id} lost"
            assert r.json()["response"] == response
        stats = client.get("/v1/cache/stats", headers=HEADERS).json()
        assert stats["entries"] == len(rows)
        # The vector index came back too (rebuilt from stored vectors, not re-embedded).
        query = next(iter(acked))
        r = client.post(
            "/v1/cache/lookup",
            json={"query": query.lower().rstrip("?"), "model": "m"},
            headers=HEADERS,
        )
        assert r.json()["status"] == "HIT-SEMANTIC"
