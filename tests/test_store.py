"""The stores on real databases, with random unit vectors (no model needed).

The behaviour tests run on both backends (the ``store`` fixture): SQLite + FAISS in a temp
folder, and PostgreSQL + pgvector on the embedded test server (a fresh database per module,
emptied before each test). FAISS index files and SQLite file upgrades are SQLite-only.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from postgres_helpers import PgDatabase
from store_entries import unit_vector

from semcache.errors import StorageError
from semcache.store import CacheStore, NewEntry, Partition, SqlFaissStore
from semcache.store.postgres import PostgresStore

DIM = 8
P = Partition("acme", "support", "gpt-4o", "v1")


def unit(seed: int) -> np.ndarray:
    return unit_vector(seed, DIM)


def new(
    n: int,
    *,
    partition: Partition = P,
    context: str = "ctx",
    created: float = 1000.0,
    ttl: float = 100.0,
) -> NewEntry:
    return NewEntry(
        entry_id=f"e{n}-{partition.tenant}",
        partition=partition,
        exact_key=f"k{n}",
        context_hash=context,
        query=f"query {n}",
        response={"n": n},
        embedding=unit(n),
        created_at=created,
        expires_at=created + ttl,
    )


def open_store(tmp_path: Path) -> SqlFaissStore:
    return SqlFaissStore(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "faiss", DIM)


Opener = Callable[[], CacheStore]


@pytest.fixture(params=["sqlite", "postgres"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the test's store, the same one each call (a restart), on either backend."""
    opened: list[CacheStore] = []
    if request.param == "sqlite":

        def make() -> CacheStore:
            return open_store(tmp_path)
    else:
        database: PgDatabase = request.getfixturevalue("pg_database")
        database.reset()

        def make() -> CacheStore:
            return PostgresStore(database.url, DIM)

    def opener() -> CacheStore:
        store = make()
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()


@pytest.fixture
def store(reopen: Opener) -> CacheStore:
    return reopen()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    open_store(tmp_path).close()
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_search_filters_context_expiry_and_tenant(store: CacheStore) -> None:
    store.put(new(1), max_entries=100)
    store.put(new(2, context="other"), max_entries=100)
    store.put(new(3, ttl=1), max_entries=100)
    store.put(new(4, partition=Partition("other", *P.as_list()[1:])), max_entries=100)
    found = store.search(P, unit(1), context_hash="ctx", now=1010.0, k=16)
    assert [c.entry.entry_id for c in found] == ["e1-acme"]
    assert found[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert store.search(P, unit(2), context_hash="other", now=1010.0, k=16)[0].entry.query == (
        "query 2"
    )
    assert store.get_exact("acme", "k3", now=1010.0) is None  # expired
    assert store.get_exact("acme", "k1", now=1010.0) is not None
    assert store.get_exact("other", "k1", now=1010.0) is None


def test_search_widens_past_crowding_neighbours(store: CacheStore) -> None:
    # Forty near-identical entries of another conversation crowd the top k.
    for n in range(40):
        store.put(new(100 + n, context="crowd"), max_entries=1000)
    store.put(new(7), max_entries=1000)
    found = store.search(P, unit(7), context_hash="ctx", now=1001.0, k=4)
    assert [c.entry.entry_id for c in found] == ["e7-acme"]


def test_a_limit_keeps_the_most_similar_live_candidates(store: CacheStore) -> None:
    """``limit``: the first of what the search finds without one, in order, also when the
    nearest entries are filtered out (another conversation here) and the rows further down
    must be read."""
    query = unit(50)
    for n in range(8):
        # The two nearest (near copies of the query) belong to another context.
        vector = query + (0.02 if n < 2 else 0.5 + 0.2 * n) * unit(60 + n)
        entry = new(10 + n, context="other" if n < 2 else "ctx")
        store.put(replace(entry, embedding=vector / np.linalg.norm(vector)), max_entries=100)
    nearest = store.search(P, query, context_hash="other", now=1001.0, k=16)
    assert [c.entry.entry_id for c in nearest] == ["e10-acme", "e11-acme"]
    assert nearest[1].similarity > 0.99
    everything = store.search(P, query, context_hash="ctx", now=1001.0, k=16)
    ids = [c.entry.entry_id for c in everything]
    assert sorted(ids) == [f"e{n}-acme" for n in range(12, 18)]
    assert max(c.similarity for c in everything) < nearest[1].similarity
    for limit in (1, 2, 4, 6, 10):
        found = store.search(P, query, context_hash="ctx", now=1001.0, k=16, limit=limit)
        assert [c.entry.entry_id for c in found] == ids[:limit]
        assert [c.similarity for c in found] == pytest.approx(
            [c.similarity for c in everything[:limit]]
        )


def test_the_widening_stops_where_nothing_further_could_pass_the_floor(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    for n in range(40):
        store.put(new(100 + n, context="crowd"), max_entries=1000)
    store.put(new(7), max_entries=1000)
    searches: list[int] = []
    search = store.vectors.search
    store.vectors.search = lambda key, vector, k: searches.append(k) or search(key, vector, k)  # type: ignore[method-assign]
    query = unit(999)  # near nothing stored: every similarity is far below 0.9
    # Without a floor the search widens (4, 16, 64) until it reaches this conversation's entry.
    assert [
        c.entry.entry_id for c in store.search(P, query, context_hash="ctx", now=1001.0, k=4)
    ] == ["e7-acme"]
    assert searches == [4, 16, 64]
    searches.clear()
    # With one, the 4th nearest is below it already: nothing further could hit, one search.
    found = store.search(P, query, context_hash="ctx", now=1001.0, k=4, min_similarity=0.9)
    assert found == [] and searches == [4]
    # Crowding entries above the floor are still widened past.
    near = unit(7) + 0.3 * unit(500)
    near /= np.linalg.norm(near)  # cosine ~0.95 to e7's vector
    for n in range(10):
        crowd = near + 0.02 * unit(600 + n)
        entry = new(200 + n, context="crowd")
        store.put(replace(entry, embedding=crowd / np.linalg.norm(crowd)), max_entries=1000)
    searches.clear()
    found = store.search(P, near, context_hash="ctx", now=1001.0, k=4, min_similarity=0.9)
    assert [c.entry.entry_id for c in found] == ["e7-acme"] and searches == [4, 16]
    store.close()


def test_same_exact_key_replaces_the_entry(store: CacheStore) -> None:
    store.put(new(1), max_entries=100)
    replacement = NewEntry(**{**new(1).__dict__, "entry_id": "fresh", "response": "new"})
    store.put(replacement, max_entries=100)
    assert store.tenant_stats("acme").entries == 1
    entry = store.get_exact("acme", "k1", now=1001.0)
    assert entry is not None and entry.response == "new"
    assert len(store.search(P, unit(1), context_hash="ctx", now=1001.0, k=16)) == 1


def test_lru_eviction_keeps_recently_used(store: CacheStore) -> None:
    for n in range(3):
        store.put(new(n, created=1000.0 + n), max_entries=3)
    first = store.get_exact("acme", "k0", now=1010.0)
    assert first is not None
    store.record_hits({first.row_id: (1, 1010.0)})  # entry 0 is now the most recently used
    _, evicted = store.put(new(3, created=1011.0), max_entries=3)
    assert evicted == 1
    kept = {n for n in range(4) if store.get_exact("acme", f"k{n}", now=1012.0)}
    assert kept == {0, 2, 3}
    left = store.search(P, unit(1), context_hash="ctx", now=1012.0, k=16)
    assert "query 1" not in {c.entry.query for c in left}


def test_sweep_and_invalidate_remove_rows_and_vectors(store: CacheStore) -> None:
    store.put(new(1, ttl=5), max_entries=100)
    store.put(new(2, ttl=500), max_entries=100)
    v2 = Partition("acme", "support", "gpt-4o", "v2")
    store.put(new(3, partition=v2), max_entries=100)
    assert store.sweep_expired(now=1010.0) == 1
    assert [c.entry.query for c in store.search(P, unit(1), context_hash="ctx", now=0, k=9)] == [
        "query 2"
    ]
    if isinstance(store, SqlFaissStore):
        assert store.vectors.size(P.key) == 1
    assert store.invalidate("acme", doc_version="v2") == 1
    assert store.search(v2, unit(3), context_hash="ctx", now=0, k=9) == []
    if isinstance(store, SqlFaissStore):
        assert store.vectors.size(v2.key) == 0
    assert store.invalidate("nobody", namespace="support") == 0
    assert store.count_entries() == 1


def test_restart_rebuilds_lost_or_stale_indexes_without_embedding(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    for n in range(5):
        store.put(new(n), max_entries=100)
    store.close()
    index_file = tmp_path / "faiss" / f"{P.key}.faiss"
    assert index_file.exists()

    # Lost file: rebuilt from the stored vectors.
    index_file.unlink()
    store = open_store(tmp_path)
    assert store.reconcile_report["rebuilt"] == 1 and store.reconcile_report["added"] == 5
    assert store.search(P, unit(3), context_hash="ctx", now=1001.0, k=1)[0].entry.query == (
        "query 3"
    )
    store.close()

    # Stale file: SQL lost a row behind the index's back (as after a crash between the two).
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        conn.execute("DELETE FROM entries WHERE exact_key = 'k3'")
    store = open_store(tmp_path)
    assert store.reconcile_report["removed"] == 1
    found = store.search(P, unit(3), context_hash="ctx", now=1001.0, k=16)
    assert "query 3" not in {c.entry.query for c in found}
    store.close()

    # Garbage file: rebuilt, not fatal.
    index_file.write_bytes(b"not a faiss index")
    store = open_store(tmp_path)
    assert store.reconcile_report["rebuilt"] == 1
    assert store.vectors.size(P.key) == 4
    store.close()


def test_wrong_hit_raises_the_entry_floor_and_survives_a_restart(reopen: Opener) -> None:
    store = reopen()
    entry, _ = store.put(new(1), max_entries=10)
    assert entry.hit_floor is None
    near, far = unit(1) * 0.8 + unit(2) * 0.2, unit(1) * 0.3 + unit(3) * 0.7
    near, far = near / np.linalg.norm(near), far / np.linalg.norm(far)
    recorded = store.record_wrong_hit("acme", entry.entry_id, near)
    assert recorded is not None
    updated, similarity = recorded
    assert similarity == pytest.approx(float(unit(1) @ near), abs=1e-5)
    assert updated.hit_floor == pytest.approx(similarity)
    # A report further away never lowers the floor; other tenants cannot report.
    assert store.record_wrong_hit("acme", entry.entry_id, far)[1] < similarity  # type: ignore[index]
    assert store.record_wrong_hit("other", entry.entry_id, near) is None
    store.close()
    again = reopen()
    assert again.get("acme", entry.entry_id).hit_floor == pytest.approx(similarity)  # type: ignore[union-attr]
    # Storing the same request again is a new answer: it starts without a floor.
    replaced, _ = again.put(new(1), max_entries=10)
    assert replaced.hit_floor is None
    assert again.get("acme", entry.entry_id).hit_floor is None  # type: ignore[union-attr]


def test_a_store_from_before_hit_floor_gains_the_column(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    entry, _ = store.put(new(1), max_entries=10)
    store.close()
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        db.execute("ALTER TABLE entries DROP COLUMN hit_floor")
        db.execute("DROP TABLE semcache_schema_version")  # files of then had no schema version
        assert "hit_floor" not in {r[1] for r in db.execute("PRAGMA table_info(entries)")}
    reopened = open_store(tmp_path)
    old = reopened.get("acme", entry.entry_id)
    assert old is not None and old.hit_floor is None and old.response == {"n": 1}
    assert reopened.record_wrong_hit("acme", entry.entry_id, unit(2)) is not None


def test_search_skips_floored_entries_and_widens_past_them(store: CacheStore) -> None:
    store.put(new(1), max_entries=100)
    store.put(new(2), max_entries=100)
    query = unit(1) * 0.9 + unit(2) * 0.1
    query /= np.linalg.norm(query)
    assert [
        c.entry.entry_id for c in store.search(P, query, context_hash="ctx", now=1001.0, k=1)
    ] == ["e1-acme"]
    store.record_wrong_hit("acme", "e1-acme", query)
    # The nearest entry is now floored at this query's similarity; k=1 must look further.
    found = store.search(P, query, context_hash="ctx", now=1001.0, k=1)
    assert [c.entry.entry_id for c in found] == ["e2-acme"]
    assert store.search(P, unit(1), context_hash="ctx", now=1001.0, k=1)[0].entry.entry_id == (
        "e1-acme"
    )


def without_autoincrement(path: Path) -> None:
    """Turn a store file into one made before ids were protected (the entries table without
    AUTOINCREMENT, as every file of earlier releases has it, and no schema version, as no file
    from before schema versions has), keeping its rows."""
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE semcache_schema_version")
        (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'entries'").fetchone()
        assert "AUTOINCREMENT" in sql
        db.execute("ALTER TABLE entries RENAME TO old")
        db.execute(sql.replace("AUTOINCREMENT", ""))
        db.execute("INSERT INTO entries SELECT * FROM old")
        db.execute("DROP TABLE old")
        db.execute("DELETE FROM sqlite_sequence WHERE name = 'entries'")


def test_deleted_top_ids_are_never_reused(store: CacheStore) -> None:
    top, _ = store.put(new(1), max_entries=10)
    assert store.delete("acme", top.entry_id)
    after, _ = store.put(new(2), max_entries=10)
    assert after.row_id > top.row_id


def test_an_older_file_is_upgraded_and_a_reused_id_repaired(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    for n in (1, 2, 3):
        store.put(new(n), max_entries=10)
    store.close()  # the index file now holds entry 3's vector under row id 3
    db_path = tmp_path / "db.sqlite"
    without_autoincrement(db_path)
    # What an earlier release did: entry 3 deleted, the next store handed the same row id.
    with sqlite3.connect(db_path) as db:
        db.execute("DELETE FROM entries WHERE row_id = 3")
        db.execute(
            "INSERT INTO entries (row_id, entry_id, tenant, namespace, model, doc_version,"
            " partition_key, exact_key, context_hash, query, response, metadata, embedding,"
            " created_at, expires_at, last_used_at, hit_count)"
            " VALUES (3, 'y', ?, ?, ?, ?, ?, 'ky', 'ctx', 'query y', '{\"n\": 99}', '{}', ?,"
            " 1000.0, 1100.0, 1000.0, 0)",
            (*P.as_list(), P.key, unit(99).tobytes()),
        )
    reopened = open_store(tmp_path)
    assert reopened.reconcile_report["repaired"] == 1
    with sqlite3.connect(db_path) as db:
        (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'entries'").fetchone()
    assert "AUTOINCREMENT" in sql
    # Nothing lost, and each vector answers for its own entry only.
    assert [reopened.get("acme", f"e{n}-acme") is not None for n in (1, 2)] == [True, True]
    found = reopened.search(P, unit(99), context_hash="ctx", now=1001.0, k=1)
    assert found[0].entry.entry_id == "y" and found[0].similarity == pytest.approx(1.0)
    stale = reopened.search(P, unit(3), context_hash="ctx", now=1001.0, k=3)
    assert all(c.similarity < 0.99 for c in stale)
    # From now on the top id is never handed out again.
    assert reopened.delete("acme", "y")
    fresh, _ = reopened.put(new(4), max_entries=10)
    assert fresh.row_id > 3


def test_postgres_store_answers_503_while_the_server_is_down_and_recovers(
    pg_database: PgDatabase,
) -> None:
    pg_database.reset()
    store = PostgresStore(pg_database.url, DIM)
    entry, _ = store.put(new(1), max_entries=10)
    pg_database.server.stop()
    try:
        with pytest.raises(StorageError) as down:
            store.get_exact("acme", "k1", now=1001.0)
        assert down.value.code == "store_unavailable"
        assert down.value.headers == {"Retry-After": "1"}
        assert "SELECT" not in down.value.message
        with pytest.raises(StorageError):
            store.check()
    finally:
        pg_database.server.start_again()
    # Back without a restart of the store: the pool replaced its dead connections.
    assert store.get_exact("acme", "k1", now=1001.0) == entry
    store.check()
    store.put(new(2), max_entries=10)
    assert [c.entry.query for c in store.search(P, unit(2), context_hash="ctx", now=0, k=1)] == [
        "query 2"
    ]
    store.close()


def test_postgres_tenant_counts_follow_every_write(pg_database: PgDatabase) -> None:
    pg_database.reset()
    store = PostgresStore(pg_database.url, DIM)

    def counted() -> dict[str, int]:
        with store.engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT tenant, entries FROM tenant_entries").all()
            real = conn.exec_driver_sql("SELECT tenant, count(*) FROM entries GROUP BY tenant")
            assert {t: n for t, n in rows if n} == dict(real.all())
        return {t: n for t, n in rows if n}

    other = Partition("globex", *P.as_list()[1:])
    for n in range(6):
        store.put(new(n, ttl=5 if n < 2 else 500), max_entries=100)
    store.put(new(9, partition=other), max_entries=100)
    store.put(new(3), max_entries=100)  # replaces k3
    assert counted() == {"acme": 6, "globex": 1}
    assert store.sweep_expired(now=1010.0) == 2
    assert store.delete("acme", "e2-acme")
    assert store.invalidate("globex") == 1
    assert counted() == {"acme": 3}
    # Eight threads storing for one tenant at its limit: the count and the limit hold.
    threads = [
        threading.Thread(target=store.put, args=(new(100 + i),), kwargs={"max_entries": 5})
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counted() == {"acme": 5}
    store.close()
