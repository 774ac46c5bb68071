"""The cache-aside API against real server processes: one on SQLite + FAISS in a temp folder,
and three replicas on one PostgreSQL database behind a round-robin client, so that every
store, lookup, delete and invalidation below also crosses replicas."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import auth
from replicas import replica_count, round_robin_client


@pytest.fixture(params=["sqlite", "postgres-3-replicas"])
def client(request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    if request.param == "sqlite":
        server = request.getfixturevalue("cache_server")
        with httpx.Client(base_url=server.url, timeout=30) as c:
            yield c
    else:
        cluster = request.getfixturevalue("pg_cluster")
        with round_robin_client(cluster.replicas) as c:
            yield c


def ns() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def store(client: httpx.Client, tenant: str, **body: Any) -> dict[str, Any]:
    body.setdefault("model", "gpt-4o-mini")
    r = client.post("/v1/cache/store", json=body, headers=auth(tenant))
    assert r.status_code == 201, r.text
    return dict(r.json())


def lookup(client: httpx.Client, tenant: str, **body: Any) -> httpx.Response:
    body.setdefault("model", "gpt-4o-mini")
    r = client.post("/v1/cache/lookup", json=body, headers=auth(tenant))
    assert r.status_code == 200, r.text
    return r


def test_paraphrase_is_a_semantic_hit_with_its_similarity(client: httpx.Client) -> None:
    space = ns()
    stored = store(
        client,
        "alice",
        namespace=space,
        query="How do I reset my password?",
        response={"answer": "Settings > Security > Reset password."},
        metadata={"source": "faq"},
    )
    r = lookup(client, "alice", namespace=space, query="How can I reset my password?")
    body = r.json()
    assert body["hit"] is True
    assert body["status"] == "HIT-SEMANTIC"
    assert 0.9 <= body["similarity"] < 1.0
    assert body["entry"]["id"] == stored["id"]
    assert body["entry"]["response"] == {"answer": "Settings > Security > Reset password."}
    assert body["entry"]["metadata"] == {"source": "faq"}
    assert r.headers["X-Semcache-Status"] == "HIT-SEMANTIC"
    assert float(r.headers["X-Semcache-Similarity"]) == round(body["similarity"], 4)
    assert r.headers["X-Semcache-Entry-Id"] == stored["id"]
    assert int(r.headers["Age"]) >= 0


def test_same_query_is_an_exact_hit(client: httpx.Client) -> None:
    space = ns()
    store(client, "alice", namespace=space, query="What is our refund policy?", response="30 days")
    body = lookup(client, "alice", namespace=space, query="What is our refund policy?").json()
    assert (body["status"], body["similarity"]) == ("HIT-EXACT", 1.0)


def test_unrelated_query_misses(client: httpx.Client) -> None:
    space = ns()
    store(client, "alice", namespace=space, query="How do I reset my password?", response="x")
    body = lookup(client, "alice", namespace=space, query="What is the weather in Oslo?").json()
    assert body == {
        "hit": False,
        "status": "MISS",
        "similarity": body["similarity"],
        "entry": None,
        "miss_reason": "below-threshold",
        "verifier_score": None,
    }
    assert body["similarity"] < 0.5


def test_partition_fields_separate_entries(client: httpx.Client) -> None:
    space = ns()
    q = "How do I export my data?"
    store(client, "alice", namespace=space, query=q, response="v1", doc_version="v1")
    assert (
        lookup(client, "alice", namespace=space, query=q, doc_version="v2").json()["hit"] is False
    )
    assert lookup(client, "alice", namespace=space, query=q, model="gpt-4o").json()["hit"] is False
    assert lookup(client, "alice", namespace=ns(), query=q, doc_version="v1").json()["hit"] is False
    hit = lookup(client, "alice", namespace=space, query=q, doc_version="v1").json()
    assert hit["entry"]["response"] == "v1"


def test_context_must_match_for_a_semantic_hit(client: httpx.Client) -> None:
    space = ns()
    paris = [
        {"role": "user", "content": "Tell me about Paris."},
        {"role": "assistant", "content": "..."},
    ]
    rome = [
        {"role": "user", "content": "Tell me about Rome."},
        {"role": "assistant", "content": "..."},
    ]
    store(client, "alice", namespace=space, query="How old is it?", response="2000+", context=paris)
    miss = lookup(client, "alice", namespace=space, query="How old is it?", context=rome).json()
    assert miss["hit"] is False
    alone = lookup(client, "alice", namespace=space, query="How old is it?").json()
    assert alone["hit"] is False
    hit = lookup(client, "alice", namespace=space, query="how old is it", context=paris)
    assert hit.json()["status"] == "HIT-SEMANTIC"


def test_threshold_override(client: httpx.Client) -> None:
    space = ns()
    store(client, "alice", namespace=space, query="How do I reset my password?", response="x")
    q = "How can I reset my password?"
    assert lookup(client, "alice", namespace=space, query=q, threshold=0.999).json()["hit"] is False
    assert lookup(client, "alice", namespace=space, query=q, threshold=0.8).json()["hit"] is True


def test_tenants_never_see_each_other(client: httpx.Client) -> None:
    space = ns()
    q = "What is the admin password policy?"
    entry = store(client, "alice", namespace=space, query=q, response="alice's secret")
    for query in (q, "What's the policy for admin passwords?"):
        assert lookup(client, "bob", namespace=space, query=query).json()["hit"] is False
    # Bob can neither read, delete nor invalidate Alice's entry.
    assert client.get(f"/v1/cache/entries/{entry['id']}", headers=auth("bob")).status_code == 404
    assert client.delete(f"/v1/cache/entries/{entry['id']}", headers=auth("bob")).status_code == 404
    r = client.post("/v1/cache/invalidate", json={"all": True}, headers=auth("bob"))
    assert r.status_code == 200
    assert lookup(client, "alice", namespace=space, query=q).json()["status"] == "HIT-EXACT"
    # Bob's own entry for the same query is his alone.
    store(client, "bob", namespace=space, query=q, response="bob's")
    assert lookup(client, "bob", namespace=space, query=q).json()["entry"]["response"] == "bob's"
    assert lookup(client, "alice", namespace=space, query=q).json()["entry"]["response"] == (
        "alice's secret"
    )


def test_stats_are_per_tenant(client: httpx.Client) -> None:
    before = client.get("/v1/cache/stats", headers=auth("bob")).json()
    store(client, "alice", namespace=ns(), query="Only alice stores this", response="x")
    after = client.get("/v1/cache/stats", headers=auth("bob")).json()
    assert after["tenant"] == "bob"
    assert after["entries"] == before["entries"]
    mine = client.get("/v1/cache/stats", headers=auth("alice")).json()
    assert mine["tenant"] == "alice" and mine["entries"] >= 1
    assert set(mine["lookups"]) == {"total", "hit_exact", "hit_semantic", "miss", "hit_rate"}


def test_get_and_delete_entry(client: httpx.Client) -> None:
    space = ns()
    entry = store(client, "alice", namespace=space, query="Where is the office?", response="Oslo")
    got = client.get(f"/v1/cache/entries/{entry['id']}", headers=auth("alice")).json()
    assert got["response"] == "Oslo" and got["expires_at"] == entry["expires_at"]
    r = client.delete(f"/v1/cache/entries/{entry['id']}", headers=auth("alice"))
    assert r.json() == {"id": entry["id"], "deleted": True}
    assert (
        lookup(client, "alice", namespace=space, query="Where is the office?").json()["hit"]
        is False
    )
    assert (
        client.delete(f"/v1/cache/entries/{entry['id']}", headers=auth("alice")).status_code == 404
    )


def test_invalidate_by_doc_version(client: httpx.Client) -> None:
    space = ns()
    store(
        client,
        "alice",
        namespace=space,
        query="What does plan A cost?",
        response="$5",
        doc_version="1",
    )
    store(
        client,
        "alice",
        namespace=space,
        query="What does plan B cost?",
        response="$9",
        doc_version="2",
    )
    r = client.post(
        "/v1/cache/invalidate", json={"namespace": space, "doc_version": "1"}, headers=auth("alice")
    )
    assert r.json() == {"deleted": 1}
    q1 = lookup(client, "alice", namespace=space, query="What does plan A cost?", doc_version="1")
    assert q1.json()["hit"] is False
    q2 = lookup(client, "alice", namespace=space, query="What does plan B cost?", doc_version="2")
    assert q2.json()["hit"] is True


def test_expired_entry_is_never_served_and_is_swept(client: httpx.Client) -> None:
    space = ns()
    store(client, "alice", namespace=space, query="Is the beta open?", response="yes", ttl_s=1)
    assert lookup(client, "alice", namespace=space, query="Is the beta open?").json()["hit"] is True
    time.sleep(1.2)
    assert (
        lookup(client, "alice", namespace=space, query="Is the beta open?").json()["hit"] is False
    )
    # The server sweeps every 0.5 s in this fixture; the expired row leaves the store.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        metrics = client.get("/metrics").text
        if 'semcache_evictions_total{reason="expired"}' in metrics:
            break
        time.sleep(0.2)
    assert 'semcache_evictions_total{reason="expired"}' in metrics


def test_ops_endpoints_need_no_key(client: httpx.Client) -> None:
    # One lookup of its own, so the lookup histogram is there when this test runs alone.
    lookup(client, "alice", query="is the ops endpoint up", namespace=ns())
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    for name in (
        "semcache_lookups_total",
        "semcache_lookup_seconds_bucket",
        "semcache_entries",
        "semcache_stores_total",
    ):
        assert name in r.text
    # The shipped decision: the verifier, on its int8-trained model by default.
    assert 'hit_decision="verified"' in r.text and 'verifier_precision="int8"' in r.text


def test_anthropic_style_key_header_is_accepted(client: httpx.Client) -> None:
    r = client.get("/v1/cache/stats", headers={"x-api-key": "sk-bob-test"})
    assert r.status_code == 200 and r.json()["tenant"] == "bob"


def test_a_reported_wrong_hit_stops_that_query_but_not_closer_ones(client: httpx.Client) -> None:
    space = ns()
    entry = store(
        client, "alice", namespace=space, query="How do I reset my password?", response="x"
    )
    wrong = "How can I reset my password?"
    assert (
        lookup(client, "alice", namespace=space, query=wrong).json()["entry"]["id"] == entry["id"]
    )
    url = f"/v1/cache/entries/{entry['id']}/wrong-hits"
    r = client.post(url, json={"query": wrong}, headers=auth("alice"))
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["id"] == entry["id"] and 0.9 <= report["similarity"] < 1.0
    assert report["hit_floor"] == report["similarity"]
    assert lookup(client, "alice", namespace=space, query=wrong).json()["hit"] is False
    # Closer than the reported query (the same words in lower case), and the exact repeat.
    closer = lookup(client, "alice", namespace=space, query="how do i reset my password?").json()
    assert closer["hit"] is True and closer["similarity"] > report["hit_floor"], (closer, report)
    exact = lookup(client, "alice", namespace=space, query="How do I reset my password?").json()
    assert exact["status"] == "HIT-EXACT"
    got = client.get(f"/v1/cache/entries/{entry['id']}", headers=auth("alice")).json()
    assert got["hit_floor"] == report["hit_floor"]
    # Metrics are per process: the report is counted by the replica that took it.
    total = 0.0
    for _ in range(replica_count(client)):
        metrics = client.get("/metrics").text
        reported = [x for x in metrics.splitlines() if x.startswith("semcache_wrong_hits")]
        total += float(reported[0].split()[-1])
    assert total >= 1


def test_wrong_hit_reports_that_cannot_apply_are_client_errors(client: httpx.Client) -> None:
    space = ns()
    entry = store(client, "alice", namespace=space, query="Where is the office?", response="Oslo")
    url = f"/v1/cache/entries/{entry['id']}/wrong-hits"
    other = client.post(url, json={"query": "Where is HQ?"}, headers=auth("bob"))
    assert other.status_code == 404 and other.json()["error"]["code"] == "entry_not_found"
    own = client.post(url, json={"query": "where is the office"}, headers=auth("alice"))
    assert own.status_code == 400
    assert own.json()["error"]["code"] == "wrong_hit_is_own_question"
    assert "DELETE /v1/cache/entries/" in own.json()["error"]["message"]
    for bad in ({}, {"query": ""}, {"query": 3}, {"query": "x", "extra": 1}):
        r = client.post(url, json=bad, headers=auth("alice"))
        assert r.status_code == 400, (bad, r.text)
    assert (
        client.get(f"/v1/cache/entries/{entry['id']}", headers=auth("alice")).json()["hit_floor"]
        is None
    )
