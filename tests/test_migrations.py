"""Schema versions (Alembic, semcache/store/migrations) on both backends.

``tests/data/semcache-before-alembic.db`` is a SQLite store written by the code of commit
f1a0e53, the last before schema versions: entries e1, e2 (tenant acme, e1 with a hit floor and
three hits) and e3 (tenant globex), the top row id 4 deleted, one attribution row; DIM=8
vectors ``unit(n)`` as in test_store.py.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from postgres_helpers import PgDatabase
from servers import REPO, free_port
from sqlalchemy import Engine, create_engine, text
from test_store import DIM, P, new, unit

from semcache.store import SqlFaissStore
from semcache.store.attribution import UsageRow
from semcache.store.migrate import VERSION_TABLE, SchemaTooNew, head_revision
from semcache.store.migrations.frozen import HNSW_INDEX
from semcache.store.postgres import PostgresStore
from semcache.store.schema import metadata

BEFORE_ALEMBIC = Path(__file__).resolve().parent / "data" / "semcache-before-alembic.db"
USAGE_ROW = UsageRow(
    ts=1.7e9,
    day="2023-11-14",
    tenant="acme",
    user="",
    feature="",
    model="gpt-4o",
    status="MISS",
    prompt_tokens=10,
    completion_tokens=5,
    cached_tokens=0,
    cost_usd=0.001,
    saved_usd=0.0,
    prompt_cache_saved_usd=0.0,
    latency_ms=12.0,
)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "semcache", *args],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
    )


def copy_old_file(tmp_path: Path) -> Path:
    db = tmp_path / "semcache.db"
    shutil.copy(BEFORE_ALEMBIC, db)
    return db


def test_a_file_made_before_schema_versions_upgrades_without_loss(tmp_path: Path) -> None:
    db = copy_old_file(tmp_path)
    with sqlite3.connect(db) as conn:
        before = conn.execute("SELECT * FROM entries ORDER BY row_id").fetchall()
        requests_before = conn.execute("SELECT * FROM requests").fetchall()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert VERSION_TABLE not in tables and len(before) == 3

    store = SqlFaissStore(f"sqlite:///{db}", tmp_path / "faiss", DIM)
    assert store.schema.before is None and store.schema.after == head_revision()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT * FROM entries ORDER BY row_id").fetchall() == before
        assert conn.execute("SELECT * FROM requests").fetchall() == requests_before
        (version,) = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()
    assert version == head_revision()
    e1 = store.get("acme", "e1")
    assert e1 is not None and e1.hit_count == 3 and e1.hit_floor == pytest.approx(0.99127, 1e-4)
    assert e1.response == {"n": 1, "text": "réponse"} and e1.metadata == {"m": 1}
    assert store.get("globex", "e3") is not None
    found = store.search(P, unit(2), context_hash="ctx", now=2000.0, k=4)
    assert found[0].entry.entry_id == "e2" and found[0].similarity == pytest.approx(1.0)
    # The deleted top id 4 is never handed out again.
    fresh, _ = store.put(new(5), max_entries=100)
    assert fresh.row_id > 4
    assert len(store.attribution().rows()) == 1
    store.close()

    # Opening again changes nothing.
    again = SqlFaissStore(f"sqlite:///{db}", tmp_path / "faiss", DIM)
    assert not again.schema.changed
    again.close()


def _too_new(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = 'f00dfeed'"))


def test_sqlite_store_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'semcache.db'}"
    SqlFaissStore(url, tmp_path / "faiss", DIM).close()
    engine = create_engine(url)
    _too_new(engine)
    engine.dispose()
    with pytest.raises(SchemaTooNew, match="revision f00dfeed, newer than this semcache"):
        SqlFaissStore(url, tmp_path / "faiss", DIM)


def test_serve_refuses_a_newer_schema_with_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'semcache.db'}"
    SqlFaissStore(url, tmp_path / "faiss", 384).close()
    engine = create_engine(url)
    _too_new(engine)
    engine.dispose()
    # torch: the store opens after the encoder loads, and the ONNX runtime would first export
    # the models into this fresh data dir (most of a minute) only to be refused.
    result = cli(
        "serve",
        "--port",
        str(free_port()),
        "--data-dir",
        str(tmp_path),
        env={"SEMCACHE_INFERENCE_RUNTIME": "torch"},
    )
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("semcache: error: the database schema is at revision f00dfeed")
    assert "Traceback" not in result.stderr


def test_db_upgrade_command_on_sqlite(tmp_path: Path) -> None:
    copy_old_file(tmp_path)
    first = cli("db", "upgrade", "--data-dir", str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert f"upgraded the store's schema from none to {head_revision()}" in first.stdout
    second = cli("db", "upgrade", "--data-dir", str(tmp_path))
    assert "nothing to do" in second.stdout, second.stderr
    current = cli("db", "current", "--data-dir", str(tmp_path))
    assert f"database: {head_revision()}" in current.stdout, current.stderr
    # It also built the FAISS index from the stored vectors, as serve would on start.
    assert list((tmp_path / "faiss").glob("*.faiss"))


def _drift(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(context, metadata)
    # Not in schema.py: tenant_entries, PostgreSQL's trigger-kept counts (revision 0005), and
    # deleted_rows, SQLite's tombstones of deleted entries (0007).
    ignored = {
        VERSION_TABLE,
        HNSW_INDEX,
        "tenant_entries",
        "rate_buckets",
        "spend_days",
        "deleted_rows",
    }

    def named(diff: object) -> str:
        item = diff[1] if isinstance(diff, tuple) else None
        return str(getattr(item, "name", ""))

    return [d for d in diffs if named(d) not in ignored and not isinstance(d, list)]


def test_migrations_make_the_tables_the_code_queries_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'semcache.db'}"
    SqlFaissStore(url, tmp_path / "faiss", DIM).close()
    engine = create_engine(url)
    assert _drift(engine) == []
    with engine.connect() as conn:
        made = set(conn.execute(text("SELECT type, name FROM sqlite_master")).all())
    # Revision 0007's tombstones, which catch_up reads (tests/test_shared_data_dir.py).
    assert {("table", "deleted_rows"), ("trigger", "entries_deleted")} <= made
    engine.dispose()


# -- PostgreSQL -------------------------------------------------------------------------------


def test_migrations_make_the_tables_the_code_queries_postgres(pg_database: PgDatabase) -> None:
    pg_database.reset()
    store = PostgresStore(pg_database.url, DIM)
    assert store.schema.before is None and store.schema.after == head_revision()
    with store.engine.connect() as conn:
        (definition,) = conn.execute(
            text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"), {"n": HNSW_INDEX}
        ).one()
    assert "USING hnsw (embedding vector_ip_ops)" in definition
    assert _drift(store.engine) == []
    store.close()


def test_postgres_replicas_starting_together_migrate_once(pg_database: PgDatabase) -> None:
    pg_database.reset()
    opened: list[PostgresStore] = []
    failures: list[BaseException] = []

    def start() -> None:
        try:
            opened.append(PostgresStore(pg_database.url, DIM))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sorted(s.schema.changed for s in opened) == [False, False, False, True]
    entry, _ = opened[0].put(new(1), max_entries=10)
    assert opened[3].get("acme", entry.entry_id) is not None
    for store in opened:
        store.close()


def test_postgres_store_newer_than_the_code_is_refused(pg_database: PgDatabase) -> None:
    pg_database.reset()
    PostgresStore(pg_database.url, DIM).close()
    pg_database.execute(f"UPDATE {VERSION_TABLE} SET version_num = 'f00dfeed'")
    with pytest.raises(SchemaTooNew, match="revision f00dfeed, newer than this semcache"):
        PostgresStore(pg_database.url, DIM)


def test_db_upgrade_command_on_postgres(pg_database: PgDatabase) -> None:
    pg_database.reset()
    env = {"SEMCACHE_DATABASE_URL": pg_database.url}
    first = cli("db", "upgrade", env=env)
    assert first.returncode == 0, first.stderr
    assert f"from none to {head_revision()}" in first.stdout
    assert "nothing to do" in cli("db", "upgrade", env=env).stdout
    # Made for the bundled encoder's 384 dimensions.
    store = PostgresStore(pg_database.url, 384)
    store.put(
        type(new(1))(**{**new(1).__dict__, "embedding": np.ones(384, np.float32) / 384**0.5}),
        max_entries=10,
    )
    store.close()


def test_report_reads_the_shared_attribution_rows(pg_database: PgDatabase) -> None:
    pg_database.reset()
    store = PostgresStore(pg_database.url, DIM)
    store.attribution().add_many([USAGE_ROW, USAGE_ROW])
    store.close()
    result = cli("report", env={"SEMCACHE_DATABASE_URL": pg_database.url.replace("+psycopg", "")})
    assert result.returncode == 0, result.stderr
    total = [line for line in result.stdout.splitlines() if line.strip().startswith("TOTAL")]
    assert total and total[0].split()[1] == "2", result.stdout
