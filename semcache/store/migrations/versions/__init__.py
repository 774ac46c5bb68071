"""Alembic revisions, oldest first: r0001 (tables), r0002 (hit_floor), r0003 (ids never reused)."""
