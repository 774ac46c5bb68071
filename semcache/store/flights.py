"""Cross-replica single-flight claims: one row per exact key being fetched upstream.

The replica that inserts the row (or takes over an expired one) makes the upstream call; the
others wait for the entry it stores, or for the row to go (released after the store, or after
a failure) and then claim it themselves. A claim lives ``ttl_s`` past its last renewal; the
holder renews it while its call runs, so a replica that dies holding one blocks the others at
most ``ttl_s``. Times are the database's clock, so replicas' clocks need not agree.
"""

from __future__ import annotations

from sqlalchemy import Engine, bindparam, delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError

from .pg_errors import pg_storage_error
from .schema import flights

__all__ = ["FlightClaims"]


class FlightClaims:
    """Claims over the shared store's engine (PostgreSQL)."""

    def __init__(self, engine: Engine, ttl_s: float = 15.0) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        stmt = insert(flights).values(
            exact_key=bindparam("key"),
            owner=bindparam("owner"),
            expires_at=func.extract("epoch", func.clock_timestamp()) + bindparam("ttl"),
        )
        self._claim = stmt.on_conflict_do_update(
            index_elements=[flights.c.exact_key],
            set_={"owner": stmt.excluded.owner, "expires_at": stmt.excluded.expires_at},
            # Only an expired claim changes hands.
            where=flights.c.expires_at < func.extract("epoch", func.clock_timestamp()),
        ).returning(flights.c.owner)

    def claim(self, key: str, owner: str) -> bool:
        """Take the claim on ``key``; False when another live claim holds it."""
        try:
            with self.engine.begin() as conn:
                won = conn.execute(
                    self._claim, {"key": key, "owner": owner, "ttl": self.ttl_s}
                ).first()
        except SQLAlchemyError as exc:
            raise pg_storage_error("cannot claim an upstream call", exc) from exc
        return won is not None

    def renew(self, key: str, owner: str) -> bool:
        """Push the claim's expiry ``ttl_s`` ahead; False when it is no longer ours."""
        try:
            with self.engine.begin() as conn:
                result = conn.execute(
                    flights.update()
                    .where(flights.c.exact_key == key, flights.c.owner == owner)
                    .values(expires_at=func.extract("epoch", func.clock_timestamp()) + self.ttl_s)
                )
        except SQLAlchemyError as exc:
            raise pg_storage_error("cannot renew an upstream call's claim", exc) from exc
        return bool(result.rowcount)

    def held(self, key: str) -> bool:
        """Whether a live claim (anyone's) holds ``key``."""
        try:
            with self.engine.connect() as conn:
                row = conn.execute(
                    select(flights.c.owner).where(
                        flights.c.exact_key == key,
                        flights.c.expires_at >= func.extract("epoch", func.clock_timestamp()),
                    )
                ).first()
        except SQLAlchemyError as exc:
            raise pg_storage_error("cannot read an upstream call's claim", exc) from exc
        return row is not None

    def release(self, key: str, owner: str) -> None:
        """Drop our claim on ``key`` (another's, taken over after ours expired, stays)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    delete(flights).where(flights.c.exact_key == key, flights.c.owner == owner)
                )
        except SQLAlchemyError as exc:
            raise pg_storage_error("cannot release an upstream call's claim", exc) from exc
