"""Large partitions on real FAISS and real SQLite files: the switch to an approximate index
(IVF, and HNSW where set), tombstones, the snapshot + log persistence, rebuilds, retraining as a
partition grows, a change of kind and a damaged log. A threshold of 200 entries keeps them
fast; the figures at 1M entries are benchmarks/scale.py's."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from store_entries import PARTITION, numbered_entry, unit_vector

from semcache.store import NewEntry, SqlFaissStore
from semcache.store.approx_index import ApproxPartition
from semcache.store.faiss_index import IndexOptions, RWLock

DIM = 16
P = PARTITION
THRESHOLD = 200


def unit(seed: int) -> np.ndarray:
    return unit_vector(seed, DIM)


def near(seed: int) -> np.ndarray:
    """A near duplicate of ``unit(seed)`` (cosine about 0.95)."""
    v = unit(seed) * 0.95 + unit(seed + 100_000) * 0.31
    return v / np.linalg.norm(v)


def new(n: int, ttl: float = 100.0) -> NewEntry:
    return numbered_entry(n, DIM, expires_at=1000.0 + ttl)


@pytest.fixture(params=["ivf", "hnsw"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def open_store(tmp_path: Path, kind: str, **options: float) -> SqlFaissStore:
    return SqlFaissStore(
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        tmp_path / "faiss",
        DIM,
        index_options=IndexOptions(approximate_min_entries=THRESHOLD, kind=kind, **options),  # type: ignore[arg-type]
    )


def crash(store: SqlFaissStore) -> None:
    """Stop the store as a killed process would: no save, background threads gone."""
    part = store.vectors.partition(P.key)
    if isinstance(part, ApproxPartition):
        part.stop()
    # Connections closed and the index files' lock freed, as the kernel frees a dead process's.
    store._release()


def approx(store: SqlFaissStore) -> ApproxPartition:
    part = store.vectors.partition(P.key)
    assert isinstance(part, ApproxPartition), f"partition is {store.vectors.kind(P.key)}"
    return part


def top(store: SqlFaissStore, vector: np.ndarray, k: int = 1) -> list[str]:
    found = store.search(P, vector, context_hash="ctx", now=1001.0, k=k)
    return [c.entry.entry_id for c in found]


def test_a_partition_past_the_threshold_turns_approximate_and_finds_the_nearest(
    tmp_path: Path, kind: str
) -> None:
    store = open_store(tmp_path, kind)
    store.put_many([new(n) for n in range(THRESHOLD - 1)], max_entries=10_000)
    assert store.vectors.kind(P.key) == "flat"
    store.put_many([new(n) for n in range(THRESHOLD - 1, 400)], max_entries=10_000)
    # Found at once (the exact segment) and once merged into the graph.
    assert top(store, near(350)) == ["e350"]
    assert store.vectors.wait_idle(60)
    assert approx(store).graph_size == 400
    assert store.vectors.kind(P.key) == kind
    assert [top(store, near(n)) for n in range(0, 400, 7)] == [[f"e{n}"] for n in range(0, 400, 7)]
    found = store.search(P, unit(5), context_hash="ctx", now=1001.0, k=1)
    assert found[0].similarity == pytest.approx(1.0, abs=1e-5)
    store.close()
    assert (tmp_path / "faiss" / f"{P.key}.ann").exists()
    assert not (tmp_path / "faiss" / f"{P.key}.faiss").exists()


def test_deleted_invalidated_and_expired_entries_are_never_returned(
    tmp_path: Path, kind: str
) -> None:
    store = open_store(tmp_path, kind, rebuild_deleted_fraction=0.9)
    store.put_many([new(n, ttl=5 if n % 10 == 0 else 500) for n in range(400)], max_entries=10_000)
    assert store.vectors.wait_idle(60)
    for n in range(1, 400, 10):
        assert store.delete("acme", f"e{n}")
    assert store.sweep_expired(now=1010.0) == 40
    gone = {f"e{n}" for n in range(400) if n % 10 in (0, 1)}
    part = approx(store)
    assert part.deleted == 80
    for n in range(0, 400, 3):
        # The index itself filters tombstones (in FAISS): no wasted slots in the top k.
        raw = store.vectors.search(P.key, unit(n), 5)
        assert len(raw) == 5
        ids = top(store, unit(n), k=5)
        assert not set(ids) & gone
        assert (ids[0] == f"e{n}") == (f"e{n}" not in gone)
    row_of = {e: r for r, e in _rows(tmp_path)}
    live_rows = set(row_of.values())
    for n in range(0, 400, 3):
        assert {r for r, _ in store.vectors.search(P.key, unit(n), 5)} <= live_rows
    store.close()


def _rows(tmp_path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        return list(db.execute("SELECT row_id, entry_id FROM entries"))


def test_a_restart_loads_snapshot_and_log_and_a_save_writes_only_the_log(
    tmp_path: Path, kind: str
) -> None:
    store = open_store(tmp_path, kind)
    store.put_many([new(n) for n in range(400)], max_entries=10_000)
    assert store.vectors.wait_idle(60)
    store.close()  # a snapshot
    snapshot = tmp_path / "faiss" / f"{P.key}.ann"
    log = tmp_path / "faiss" / f"{P.key}.alog"
    snapshot_bytes = snapshot.stat().st_size

    store = open_store(tmp_path, kind)
    assert store.reconcile_report["added"] == 0 and store.reconcile_report["loaded"] == 1
    for n in range(400, 405):
        store.put(new(n), max_entries=10_000)
    store.delete("acme", "e3")
    written = store.vectors.save()
    # Five add records (id + vector each) and a delete record: the log, not the index.
    assert 0 < written <= 5 * (9 + 8 + 4 * DIM) + (9 + 8)
    assert written < snapshot_bytes / 50
    assert snapshot.stat().st_size == snapshot_bytes
    assert log.stat().st_size >= written
    crash(store)

    # Nothing re-embedded or read from SQL: every vector came from the snapshot and the log.
    store = open_store(tmp_path, kind)
    report = store.reconcile_report
    assert (report["added"], report["removed"], report["repaired"]) == (0, 0, 0), report
    assert top(store, near(402)) == ["e402"]
    assert "e3" not in top(store, unit(3), k=3)
    assert store.vectors.size(P.key) == 404
    store.close()


def test_a_rebuild_after_many_deletes_drops_the_tombstones(tmp_path: Path, kind: str) -> None:
    store = open_store(tmp_path, kind)
    ttls = [5.0] * 150 + [50.0] * 260 + [500.0] * 90
    store.put_many([new(n, ttl) for n, ttl in enumerate(ttls)], max_entries=10_000)
    assert store.vectors.wait_idle(60)
    assert store.sweep_expired(now=1010.0) == 150  # 30% of the graph: past the 20% rebuild
    assert store.vectors.wait_idle(60)
    part = approx(store)
    assert (part.deleted, part.graph_size, part.size) == (0, 350, 350)
    assert [top(store, near(n)) for n in range(150, 500, 9)] == [
        [f"e{n}"] for n in range(150, 500, 9)
    ]
    store.close()
    again = open_store(tmp_path, kind)
    assert approx(again).deleted == 0 and again.reconcile_report["added"] == 0
    # Down to under half the threshold: exact again, in a .faiss file.
    assert again.sweep_expired(now=1060.0) == 260
    assert again.vectors.kind(P.key) == "flat"
    assert top(again, near(450)) == ["e450"]
    again.close()
    names = sorted(p.suffix for p in (tmp_path / "faiss").iterdir() if p.name != "owner.lock")
    assert names == [".faiss"]


def test_a_damaged_log_is_detected_and_repaired_from_sql(tmp_path: Path, kind: str) -> None:
    store = open_store(tmp_path, kind)
    store.put_many([new(n) for n in range(300)], max_entries=10_000)
    store.close()
    store = open_store(tmp_path, kind)
    store.put_many([new(n) for n in range(300, 310)], max_entries=10_000)
    store.vectors.save()
    log = tmp_path / "faiss" / f"{P.key}.alog"
    first = log.stat().st_size
    store.put_many([new(n) for n in range(310, 320)], max_entries=10_000)
    store.vectors.save()
    crash(store)
    # Flip bytes inside the second record's vectors: right length, wrong numbers.
    data = bytearray(log.read_bytes())
    for i in range(first + 200, first + 240):
        data[i] ^= 0x5A
    log.write_bytes(bytes(data))

    store = open_store(tmp_path, kind)
    assert store.reconcile_report["added"] == 10, store.reconcile_report
    for n in range(300, 320):
        found = store.search(P, unit(n), context_hash="ctx", now=1001.0, k=1)
        assert found[0].entry.entry_id == f"e{n}"
        assert found[0].similarity == pytest.approx(1.0, abs=1e-5)
    # The damaged log is replaced by a snapshot at the next save.
    assert approx(store).snapshot_needed
    store.vectors.save()
    assert log.stat().st_size < first
    store.close()


def test_searches_go_on_while_a_snapshot_is_written(tmp_path: Path, kind: str) -> None:
    store = open_store(tmp_path, kind)
    store.put_many([new(n) for n in range(300)], max_entries=10_000)
    part = approx(store)
    found: list[list[str]] = []
    with part.mutation:  # what a snapshot save holds while it writes
        # A change queued behind the save must not hold up searches either.
        writer = threading.Thread(target=store.put, args=(new(300),), kwargs={"max_entries": 9999})
        writer.start()
        searcher = threading.Thread(target=lambda: found.append(top(store, near(42))))
        searcher.start()
        searcher.join(10)
        assert found == [["e42"]]
        assert writer.is_alive()
    writer.join(10)
    assert top(store, unit(300)) == ["e300"]
    store.close()


def test_an_ivf_partition_is_retrained_with_more_lists_as_it_grows(tmp_path: Path) -> None:
    store = open_store(tmp_path, "ivf")
    store.put_many([new(n) for n in range(THRESHOLD)], max_entries=10_000)
    assert store.vectors.wait_idle(60)
    lists = approx(store).state()[0].nlist
    # 4x what the lists were trained for: the background thread trains new ones and refills.
    store.put_many([new(n) for n in range(THRESHOLD, 6 * THRESHOLD)], max_entries=10_000)
    assert store.vectors.wait_idle(60)
    graph = approx(store).state()[0]
    assert graph.nlist >= 2 * lists and graph.ntotal == 6 * THRESHOLD
    wanted = range(0, 6 * THRESHOLD, 11)
    assert [top(store, near(n)) for n in wanted] == [[f"e{n}"] for n in wanted]
    store.close()
    again = open_store(tmp_path, "ivf")
    assert again.reconcile_report["added"] == 0
    assert approx(again).state()[0].nlist == graph.nlist
    again.close()


@pytest.mark.parametrize(("saved", "wanted"), [("hnsw", "ivf"), ("ivf", "hnsw")])
def test_a_partition_saved_as_one_kind_is_rebuilt_as_the_kind_set(
    tmp_path: Path, saved: str, wanted: str
) -> None:
    store = open_store(tmp_path, saved)
    store.put_many([new(n) for n in range(400)], max_entries=10_000)
    store.delete("acme", "e7")
    assert store.vectors.wait_idle(60)
    store.close()
    again = open_store(tmp_path, wanted)
    # Served from the saved index at once, then rebuilt from its own vectors: nothing read from
    # SQL or embedded again.
    assert top(again, near(250)) == ["e250"]
    assert again.vectors.wait_idle(60)
    assert again.vectors.kind(P.key) == wanted
    assert again.reconcile_report["added"] == 0
    assert [top(again, near(n)) for n in range(0, 400, 9)] == [[f"e{n}"] for n in range(0, 400, 9)]
    assert "e7" not in top(again, unit(7), k=3)
    assert approx(again).deleted == 0 and approx(again).size == 399
    again.close()


def test_index_files_under_the_names_before_ivf_are_loaded(tmp_path: Path) -> None:
    store = open_store(tmp_path, "hnsw")
    store.put_many([new(n) for n in range(300)], max_entries=10_000)
    store.close()
    folder = tmp_path / "faiss"
    (folder / f"{P.key}.ann").rename(folder / f"{P.key}.hnsw")
    (folder / f"{P.key}.alog").rename(folder / f"{P.key}.hlog")
    again = open_store(tmp_path, "hnsw")
    assert again.reconcile_report["loaded"] == 1 and again.reconcile_report["added"] == 0
    assert top(again, near(123)) == ["e123"]
    again.close()
    assert sorted(p.suffix for p in folder.iterdir() if p.name != "owner.lock") == [".alog", ".ann"]


def test_deletes_and_replacements_made_during_a_rebuild_are_carried_over(
    tmp_path: Path, kind: str
) -> None:
    store = open_store(tmp_path, kind)
    store.put_many([new(n, ttl=5 if n < 150 else 500) for n in range(500)], max_entries=10_000)
    assert store.vectors.wait_idle(60)
    part = approx(store)
    filled, go_on = threading.Event(), threading.Event()
    fill = part._fill

    def fill_then_wait(graph: object, positions: np.ndarray) -> bool:
        done = fill(graph, positions)
        filled.set()  # the new graph holds every vector; the swap waits for the test
        go_on.wait(30)
        return done

    part._fill = fill_then_wait  # type: ignore[method-assign]
    assert store.sweep_expired(now=1010.0) == 150  # 30%: a rebuild starts
    assert filled.wait(30)
    assert store.delete("acme", "e200")
    moved = replace(new(300), embedding=unit(9_999))  # same key, another vector
    store.put(moved, max_entries=10_000)
    go_on.set()
    assert store.vectors.wait_idle(60)
    # The two rows changed meanwhile are tombstones in the new graph; the new vector is fresh.
    assert (part.deleted, part.size) == (2, 349)
    assert "e200" not in top(store, unit(200), k=3)
    assert top(store, unit(9_999)) == ["e300"] and "e300" not in top(store, unit(300), k=1)
    assert [top(store, near(n)) for n in range(151, 500, 13)] == [
        [f"e{n}"] for n in range(151, 500, 13)
    ]
    store.close()


def test_a_writer_taking_the_lock_again_lets_the_queued_searches_in_first() -> None:
    lock = RWLock()
    entered: list[str] = []
    with lock.exclusive():
        reader = threading.Thread(target=lambda: _read_once(lock, entered))
        reader.start()
        while lock._queued_readers == 0:  # the search is queued behind this write
            threading.Event().wait(0.001)
    lock.let_readers_in(timeout=5)
    with lock.exclusive():
        entered.append("writer")
    reader.join(5)
    assert entered == ["reader", "writer"]


def _read_once(lock: RWLock, entered: list[str]) -> None:
    with lock.shared():
        entered.append("reader")
