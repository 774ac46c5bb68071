"""Which store a database URL gets: PostgreSQL + pgvector, or SQLite (or another SQLAlchemy URL)
with FAISS indexes in the data dir."""

from __future__ import annotations

from pathlib import Path

from ..errors import StorageError
from .base import CacheStore
from .postgres import PostgresOptions, PostgresStore, is_postgres_url
from .sql_faiss import SqlFaissStore
from .sqlite import StoreOptions
from .vectors import IndexOptions

__all__ = ["open_store"]


def open_store(
    database_url: str,
    *,
    data_dir: Path,
    dim: int,
    write_timeout_s: float = 5.0,
    min_free_disk_mb: float = 64.0,
    pool_size: int = 10,
    ef_search: int = 100,
    approximate_min_entries: int = IndexOptions.approximate_min_entries,
    approximate_ef_search: int = IndexOptions.ef_search,
    approximate_kind: str = IndexOptions.kind,
    approximate_nprobe: int = IndexOptions.nprobe,
    rebuild_deleted_fraction: float = IndexOptions.rebuild_deleted_fraction,
) -> CacheStore:
    """Open (creating or upgrading its schema) the store ``database_url`` names. A
    ``postgresql`` URL gets the shared store and needs nothing on local disk; any other gets
    entries in SQL and FAISS indexes under ``<data_dir>/faiss``."""
    if is_postgres_url(database_url):
        return PostgresStore(
            database_url,
            dim,
            PostgresOptions(
                write_timeout_s=write_timeout_s, pool_size=pool_size, ef_search=ef_search
            ),
        )
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create data dir {data_dir}: {exc.strerror}") from exc
    return SqlFaissStore(
        database_url,
        data_dir / "faiss",
        dim,
        StoreOptions(write_timeout_s=write_timeout_s, min_free_disk_mb=min_free_disk_mb),
        IndexOptions(
            approximate_min_entries=approximate_min_entries,
            ef_search=approximate_ef_search,
            kind=approximate_kind,
            nprobe=approximate_nprobe,
            rebuild_deleted_fraction=rebuild_deleted_fraction,
        ),
    )
