"""PostgreSQL: rate-limit buckets and spend totals shared by every replica
(store/counters.py), so an RPM/TPM limit, a model's TPM budget and a spend budget hold for the
cluster, not per process. A SQLite store has one process and keeps them in memory.

``spend_days`` starts from the attribution rows already there, so budgets count what was spent
before the upgrade.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # level: what the bucket held at ``at`` (the database's clock, epoch seconds); the
    # capacity and refill rate are the caller's, so a changed limit applies at once.
    op.execute(
        "CREATE TABLE IF NOT EXISTS rate_buckets ("
        " name VARCHAR(300) PRIMARY KEY,"
        " level DOUBLE PRECISION NOT NULL,"
        " at DOUBLE PRECISION NOT NULL)"
    )
    # One row per budget scope and UTC day; numeric, so sums of micro-dollars stay exact.
    op.execute(
        "CREATE TABLE IF NOT EXISTS spend_days ("
        " kind VARCHAR(10) NOT NULL,"
        " name VARCHAR(200) NOT NULL,"
        " tenant VARCHAR(200) NOT NULL,"
        " day VARCHAR(10) NOT NULL,"
        " spent NUMERIC NOT NULL DEFAULT 0,"
        " saved NUMERIC NOT NULL DEFAULT 0,"
        " PRIMARY KEY (tenant, kind, name, day))"
    )
    op.execute("LOCK TABLE requests IN SHARE ROW EXCLUSIVE MODE")
    op.execute("DELETE FROM spend_days")
    for kind, column in (("tenant", "tenant"), ("user", '"user"'), ("feature", "feature")):
        op.execute(
            "INSERT INTO spend_days (kind, name, tenant, day, spent, saved) "
            f"SELECT '{kind}', {column}, tenant, day, "
            " sum(coalesce(cost_usd, 0))::numeric, sum(saved_usd)::numeric "
            f"FROM requests WHERE {column} <> '' GROUP BY {column}, tenant, day"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_table("spend_days")
    op.drop_table("rate_buckets")
