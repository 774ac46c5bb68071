"""``semcache db upgrade``: bring the store's schema to this release's newest revision.

``semcache serve`` does the same on open (SQLite files and PostgreSQL databases alike, under
the migration lock); this command does it ahead of a deploy, so that replicas of the new
release start on a database already upgraded and replicas of the old one keep serving (the
revisions only add). A database upgraded by a newer release is refused, never touched.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.exc import SQLAlchemyError

from .config import Settings, load_settings
from .store.migrate import DEFAULT_DIM, current_revision, head_revision
from .store.pg_engine import PostgresOptions, is_postgres_url, make_pg_engine
from .store.postgres import PostgresStore
from .store.sql_faiss import SqlFaissStore
from .store.sqlite import StoreOptions, make_engine, storage_error

__all__ = ["register", "run_upgrade"]


def register(commands: Any) -> None:
    """Add ``semcache db upgrade`` and ``semcache db current`` to the CLI."""
    parser = commands.add_parser("db", help="store schema: upgrade, or show its revision")
    actions = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    for name, handler, help_text in (
        ("upgrade", run_upgrade, "upgrade the store's schema to this release's newest"),
        ("current", run_current, "print the store's schema revision and this release's"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("--config", help="TOML settings file (for data_dir, database_url)")
        action.add_argument("--data-dir", dest="data_dir", help="data folder (default index_data)")
        action.set_defaults(handler=handler)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(config_file=args.config, overrides={"data_dir": args.data_dir})


def _dim(settings: Settings) -> int:
    """The encoder's dimension, which a new PostgreSQL entries table is made for."""
    if not settings.embedding_model:
        return DEFAULT_DIM  # the bundled all-MiniLM-L6-v2, without loading it
    from .app import load_encoder

    return load_encoder(settings).dim


def run_upgrade(args: argparse.Namespace) -> int:
    settings = _settings(args)
    url = settings.resolved_database_url
    if is_postgres_url(url):
        store = PostgresStore(url, _dim(settings))
        schema = store.schema
        store.close()
    else:
        # The whole store is opened: an upgrade that rebuilt the entries table also has every
        # FAISS vector checked against SQL, and the indexes saved (unless a running server owns
        # them), as serve would on start.
        data_dir = Path(settings.data_dir)
        sqlite_store = SqlFaissStore(url, data_dir / "faiss", _sqlite_dim(url))
        schema = sqlite_store.schema
        sqlite_store.close()
    if schema.changed:
        print(f"upgraded the store's schema from {schema.before or 'none'} to {schema.after}")
    else:
        print(f"the store's schema is at {schema.after}, this release's newest; nothing to do")
    return 0


def _sqlite_dim(url: str) -> int:
    """The dimension of the vectors a SQLite store holds (float32 blobs), or the default."""
    engine = make_engine(url, StoreOptions())
    try:
        if not inspect(engine).has_table("entries"):
            return DEFAULT_DIM
        with engine.connect() as conn:
            size = conn.execute(text("SELECT length(embedding) FROM entries LIMIT 1")).scalar()
    except SQLAlchemyError as exc:
        raise storage_error(f"cannot read the store at {engine.url}", exc) from exc
    finally:
        engine.dispose()
    return int(size) // 4 if size else DEFAULT_DIM


def run_current(args: argparse.Namespace) -> int:
    url = _settings(args).resolved_database_url
    engine = (
        make_pg_engine(url, PostgresOptions())
        if is_postgres_url(url)
        else make_engine(url, StoreOptions())
    )
    try:
        with engine.connect() as conn:
            revision = current_revision(conn)
    except SQLAlchemyError as exc:
        raise storage_error("cannot read the store's schema revision", exc) from exc
    finally:
        engine.dispose()
    print(f"database: {revision or 'none'}; this release: {head_revision()}")
    return 0
