"""What both SQL stores do the same way: read one entry or an exact key, count a tenant's
entries, delete by id, by namespace / model / document version, or all of a tenant's.

``SqlFaissStore`` and ``PostgresStore`` differ in how they search vectors and in what a delete
must also do (the embedded store drops the deleted rows' vectors from its FAISS indexes), so
each supplies ``_read`` and ``_delete_where`` and inherits the rest from ``SqlEntries``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, bindparam, func, select

from .base import Entry, TenantStats, entry_from_row
from .schema import ENTRY_COLUMNS, entries

__all__ = ["SqlEntries"]

# Built once: building and caching a fresh select() per call was more than half of an exact
# lookup's CPU time (benchmarks/results/hot_path_profile.md). They leave out the embedding,
# which no Entry carries.
_EXACT = select(*ENTRY_COLUMNS).where(
    entries.c.tenant == bindparam("tenant"),
    entries.c.exact_key == bindparam("exact_key"),
    entries.c.expires_at > bindparam("now"),
)
_BY_ID = select(*ENTRY_COLUMNS).where(
    entries.c.tenant == bindparam("tenant"), entries.c.entry_id == bindparam("entry_id")
)


class SqlEntries:
    """The entry reads and deletes shared by the SQL stores."""

    def _read(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def _delete_where(self, conditions: list[Any]) -> int:
        raise NotImplementedError

    def get(self, tenant: str, entry_id: str) -> Entry | None:
        with self._read() as conn:
            row = conn.execute(_BY_ID, {"tenant": tenant, "entry_id": entry_id}).first()
        return None if row is None else entry_from_row(row._mapping)

    def get_exact(self, tenant: str, exact_key: str, now: float) -> Entry | None:
        with self._read() as conn:
            row = conn.execute(
                _EXACT, {"tenant": tenant, "exact_key": exact_key, "now": now}
            ).first()
        return None if row is None else entry_from_row(row._mapping)

    def delete(self, tenant: str, entry_id: str) -> bool:
        return self._delete_where([entries.c.tenant == tenant, entries.c.entry_id == entry_id]) > 0

    def invalidate(
        self,
        tenant: str,
        *,
        namespace: str | None = None,
        model: str | None = None,
        doc_version: str | None = None,
    ) -> int:
        conditions = [entries.c.tenant == tenant]
        for column, value in (
            (entries.c.namespace, namespace),
            (entries.c.model, model),
            (entries.c.doc_version, doc_version),
        ):
            if value is not None:
                conditions.append(column == value)
        return self._delete_where(conditions)

    def tenant_stats(self, tenant: str) -> TenantStats:
        with self._read() as conn:
            count, partitions, hits = conn.execute(
                select(
                    func.count(),
                    func.count(entries.c.partition_key.distinct()),
                    func.coalesce(func.sum(entries.c.hit_count), 0),
                ).where(entries.c.tenant == tenant)
            ).one()
        return TenantStats(entries=int(count), partitions=int(partitions), hits=int(hits))

    def count_entries(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(entries)).scalar_one())
