"""Storage behind one narrow interface: SQL is the truth, vector indexes derive from it."""

from __future__ import annotations

from .base import CacheStore, Candidate, Entry, NewEntry, Partition, TenantStats
from .postgres import PostgresStore
from .sql_faiss import SqlFaissStore

__all__ = [
    "CacheStore",
    "Candidate",
    "Entry",
    "NewEntry",
    "Partition",
    "PostgresStore",
    "SqlFaissStore",
    "TenantStats",
]
