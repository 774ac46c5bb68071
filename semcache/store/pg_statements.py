"""The PostgreSQL store's statements, built once (``postgres``): the same SQL text every call,
which psycopg then runs as a prepared statement.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xxhash
from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    MetaData,
    String,
    Table,
    bindparam,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.types import UserDefinedType

from .base import HIT_FLOOR_MARGIN
from .schema import ENTRY_COLUMNS, entries

__all__ = [
    "INSERT",
    "LOCK_KEYS",
    "NEAREST",
    "SEARCH",
    "TENANT_COUNT",
    "WRONG_HIT",
    "BinaryVector",
    "lock_key",
    "tenant_entries",
]


class BinaryVector(UserDefinedType[np.ndarray]):
    """A numpy vector handed to psycopg as it is: pgvector's dumper (registered on every
    connection) sends it in binary, instead of SQLAlchemy's Vector type formatting 384 floats
    as text on every call."""

    cache_ok = True

    def get_col_spec(self, **_: Any) -> str:
        return "vector"


_QUERY = bindparam("q", type_=BinaryVector())
# <#> is minus the inner product (cosine similarity here); the HNSW index orders by it.
_DISTANCE = entries.c.embedding.op("<#>", return_type=Float)(_QUERY)
_SIMILARITY = _DISTANCE * -1
SEARCH = (
    select(*ENTRY_COLUMNS, _SIMILARITY.label("similarity"))
    .where(
        entries.c.partition_key == bindparam("partition_key"),
        entries.c.tenant == bindparam("tenant"),
        entries.c.context_hash == bindparam("context_hash"),
        entries.c.expires_at > bindparam("now"),
        # An entry reported as a wrong hit answers only queries closer than the reported one.
        # In the WHERE clause, so the index scan goes on past floored entries as it does past
        # other conversations': a floored top k cannot hide a match.
        or_(entries.c.hit_floor.is_(None), entries.c.hit_floor + HIT_FLOOR_MARGIN < _SIMILARITY),
    )
    .order_by(_DISTANCE)
    .limit(bindparam("k"))
)
# The partition's nearest entries before the context, expiry and hit-floor filters: why a
# search missed (run only after a miss).
NEAREST = (
    select(*ENTRY_COLUMNS, _SIMILARITY.label("similarity"))
    .where(
        entries.c.partition_key == bindparam("partition_key"),
        entries.c.tenant == bindparam("tenant"),
    )
    .order_by(_DISTANCE)
    .limit(bindparam("k"))
)
# Per-tenant entry counts (revision 0005: PostgreSQL only, kept by triggers on entries).
tenant_entries = Table(
    "tenant_entries",
    MetaData(),
    Column("tenant", String(200), primary_key=True),
    Column("entries", BigInteger, nullable=False),
)
TENANT_COUNT = select(tenant_entries.c.entries).where(
    tenant_entries.c.tenant == bindparam("tenant")
)
INSERT = (
    entries.insert()
    .values(embedding=bindparam("vector", type_=BinaryVector()))
    .returning(entries.c.row_id, sort_by_parameter_order=True)
)
# Transaction-scoped advisory locks on a put's exact keys, taken one by one in array order
# (unnest yields the elements in order, and the aggregate consumes them as they come).
LOCK_KEYS = text(
    "SELECT count(pg_advisory_xact_lock(k)) FROM unnest(CAST(:keys AS bigint[])) AS t(k)"
)
WRONG_HIT = (
    update(entries)
    .where(entries.c.tenant == bindparam("b_tenant"), entries.c.entry_id == bindparam("b_id"))
    # The floor only rises (GREATEST ignores a NULL floor).
    .values(hit_floor=func.greatest(entries.c.hit_floor, _SIMILARITY))
    .returning(*ENTRY_COLUMNS, _SIMILARITY.label("similarity"))
)


def lock_key(*parts: str) -> int:
    """A signed 64-bit advisory lock key for these strings."""
    digest = xxhash.xxh3_64_digest("\0".join(parts).encode())
    return int.from_bytes(digest, "big", signed=True)
