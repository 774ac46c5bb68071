"""Several processes on one SQLite + FAISS data dir: one owns the index files, every one finds
the entries the others store (``catch_up``), and the files stay whole.

Two ``SqlFaissStore`` objects on one folder in one process stand for two processes: the lock
is ``flock`` on an open file, which two opens in one process contend for as two processes do.
``test_import.py`` runs the real case, `semcache import` beside a running server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text
from store_entries import PARTITION, numbered_entry, unit_vector

from semcache.store import NewEntry, SqlFaissStore
from semcache.store.faiss_index import IndexOptions
from semcache.store.sql_sync import DELETED_ROWS_KEEP_S, PRUNE_SLACK_S

DIM = 8
P = PARTITION
# Small enough that 50 entries make the partition approximate (IVF), as 20,000 would.
APPROX = IndexOptions(approximate_min_entries=40)


def unit(seed: int) -> np.ndarray:
    return unit_vector(seed, DIM)


def entry(n: int) -> NewEntry:
    return numbered_entry(n, DIM, expires_at=10_000.0)


def put(store: SqlFaissStore, numbers: range | list[int]) -> None:
    store.put_many([entry(n) for n in numbers], max_entries=100_000)


def found(store: SqlFaissStore, n: int) -> bool:
    """Whether a search for entry n's own vector finds it first."""
    hits = store.search(P, unit(n), context_hash="ctx", now=2000.0, k=1)
    return bool(hits) and hits[0].entry.entry_id == f"e{n}"


def index_files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every index file's (size, mtime in ns); the lock file is not one."""
    return {
        p.name: (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.iterdir())
        if p.name != "owner.lock"
    }


Opener = Callable[..., SqlFaissStore]


@pytest.fixture
def opener(tmp_path: Path) -> Iterator[Opener]:
    opened: list[SqlFaissStore] = []

    def open_store(options: IndexOptions | None = None) -> SqlFaissStore:
        store = SqlFaissStore(
            f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "faiss", DIM, index_options=options
        )
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


def test_a_second_store_leaves_the_files_to_the_first_and_each_finds_the_others_entries(
    opener: Opener, tmp_path: Path
) -> None:
    first = opener()
    put(first, range(0, 5))
    first.flush()
    files_before = index_files(tmp_path / "faiss")
    second = opener()
    assert first.owns_index_files and not second.owns_index_files
    assert all(found(second, n) for n in range(0, 5))  # loaded from the owner's files

    put(second, range(5, 10))
    put(first, range(10, 12))
    put(second, [12])
    assert not found(first, 5) and not found(second, 10)
    assert first.catch_up() == 6  # 5..9 and 12, not its own 10 and 11
    assert second.catch_up() == 2
    assert first.catch_up() == 0 and second.catch_up() == 0
    for store in (first, second):
        assert all(found(store, n) for n in range(13))
        assert store.vectors.size(P.key) == 13  # nothing indexed twice

    second.flush()
    second.close()
    assert index_files(tmp_path / "faiss") == files_before  # never written by the second


def test_an_entry_another_store_deleted_is_never_served(opener: Opener) -> None:
    first, second = opener(), opener()
    put(first, range(3))
    assert second.catch_up() == 3
    assert second.delete(P.tenant, "e1")
    assert not found(first, 1)  # before any catch-up: its vector is indexed, its row gone
    assert found(first, 0) and found(first, 2)


@pytest.mark.parametrize("options", [None, APPROX], ids=["exact", "approximate"])
def test_the_vectors_of_entries_another_store_deletes_leave_the_index(
    opener: Opener, options: IndexOptions | None
) -> None:
    first, second = opener(options), opener(options)
    put(first, range(50))
    first.put_many([numbered_entry(60, DIM, expires_at=1500.0)], max_entries=100_000)
    assert second.catch_up() == 51
    # Every way a row goes, in the second: a delete, an LRU eviction (e0, the least recently
    # used), a sweep of expired rows (e60), a stored exact key replacing its row (e3's k3).
    assert second.delete(P.tenant, "e1")
    second.put_many([entry(50)], max_entries=50)
    assert second.sweep_expired(now=2000.0) == 1
    replacement = replace(entry(3), entry_id="e3b")
    second.put_many([replacement], max_entries=100_000)
    assert second.invalidate(P.tenant, namespace="elsewhere") == 0
    # And one in the first itself, which drops its vector at once.
    assert first.delete(P.tenant, "e2")
    assert first.vectors.size(P.key) == 50
    assert first.catch_up() == 2  # e50 and e3b added; e0, e1, e3 and e60 dropped
    assert first.vectors.size(P.key) == 48
    assert found(first, 50) and found(first, 4)
    hits = first.search(P, unit(3), context_hash="ctx", now=2000.0, k=1)
    assert [hit.entry.entry_id for hit in hits] == ["e3b"]
    # Every tombstone read once: the mark is at the top and nothing is left to drop.
    assert first._deletes is not None and first._deletes.mark == top_tombstone(first) == 5
    assert second.catch_up() == 0 and second.vectors.size(P.key) == 48  # e2 left it too
    third = opener(options)  # its mark starts at the top: nothing to read either
    assert third._deletes is not None and third._deletes.mark == 5
    assert third.vectors.size(P.key) == 48
    # remove counts only what it held (the fresh segment's ids included).
    assert first.vectors.remove(P.key, [50, 99_999]) == 1


def test_a_store_s_own_deletes_leave_its_catch_up_nothing_to_read(opener: Opener) -> None:
    store = opener()
    put(store, range(5))
    assert store.delete(P.tenant, "e0")
    store.put_many([entry(5)], max_entries=4)  # evicts e1
    assert store.invalidate(P.tenant, namespace=P.namespace) == 4
    deletes = store._deletes
    assert deletes is not None and deletes.mark == top_tombstone(store) == 6
    with store.engine.connect() as conn:
        assert not deletes.behind(conn)  # so catch_up takes no lock


def top_tombstone(store: SqlFaissStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(text("SELECT max(seq) FROM deleted_rows")).scalar_one())


def test_the_owner_prunes_tombstones_every_process_has_had_time_to_read(opener: Opener) -> None:
    first, second = opener(), opener()
    put(first, range(4))
    assert second.delete(P.tenant, "e0") and second.delete(P.tenant, "e1")
    with first.engine.begin() as conn:
        conn.execute(
            text("UPDATE deleted_rows SET deleted_at = deleted_at - :age WHERE row_id = 1"),
            {"age": DELETED_ROWS_KEEP_S + PRUNE_SLACK_S + 1},
        )
    second.flush()  # not the owner: prunes nothing
    assert tombstones(first) == [1, 2]
    first.flush()  # the owner: only the one older than DELETED_ROWS_KEEP_S goes
    assert tombstones(first) == [2]
    first.catch_up()  # the pruned tombstone was never read here: e0's vector stays (unserved)
    assert first.vectors.size(P.key) == 3
    assert not found(first, 0) and not found(first, 1) and found(first, 2)


def tombstones(store: SqlFaissStore) -> list[int]:
    with store.engine.connect() as conn:
        return [r for (r,) in conn.execute(text("SELECT row_id FROM deleted_rows ORDER BY seq"))]


@pytest.mark.parametrize("options", [None, APPROX], ids=["exact", "approximate"])
def test_the_second_store_takes_over_the_files_when_the_first_closes(
    opener: Opener, options: IndexOptions | None
) -> None:
    first = opener(options)
    put(first, range(50))  # past APPROX's threshold: the second loads a snapshot and a log
    first.flush()
    second = opener(options)
    assert second.vectors.kind(P.key) == ("flat" if options is None else "ivf")
    put(second, range(50, 80))
    assert first.catch_up() == 30
    put(first, range(80, 90))
    first.close()  # saves its state and frees the files
    assert second.catch_up() == 10
    second.flush()
    # Once seen to fail (the lock still held after the first closed); the kernel's lock table
    # says by whom if it does again.
    assert second.owns_index_files, Path("/proc/locks").read_text()
    put(second, range(90, 95))
    second.close()

    third = opener(options)
    # The files the second wrote hold every entry: nothing to add from SQL at start.
    assert third.reconcile_report["added"] == 0, third.reconcile_report
    assert third.reconcile_report["repaired"] == 0, third.reconcile_report
    assert third.vectors.size(P.key) == 95
    assert third.vectors.kind(P.key) == ("flat" if options is None else "ivf")
    assert all(found(third, n) for n in range(95))


def test_a_store_without_the_files_keeps_no_log_records_and_a_closed_one_writes_nothing(
    opener: Opener, tmp_path: Path
) -> None:
    first = opener(APPROX)
    put(first, range(50))
    first.flush()
    second = opener(APPROX)
    put(second, range(50, 120))
    assert first.catch_up() == 70
    part = second.vectors.partition(P.key)
    # Records of every added vector, for a save that never comes: none kept.
    assert part is not None and second.vectors.kind(P.key) == "ivf"
    assert part.pending == []  # type: ignore[union-attr]
    first.close()
    second.close()
    files = index_files(tmp_path / "faiss")
    second.flush()  # a periodic save that started as the server stopped
    assert second.catch_up() == 0
    assert not second.owns_index_files
    assert index_files(tmp_path / "faiss") == files
