"""Schema versions of both stores (SQLite and PostgreSQL), as Alembic revisions.

``semcache.store.migrate`` runs them programmatically (no alembic.ini): ``semcache serve``
on open, ``semcache db upgrade`` ahead of a deploy. The version is kept in the
``semcache_schema_version`` table. Revisions branch on the dialect where the two backends differ
(the PostgreSQL entries table keeps its vectors in a pgvector column with an HNSW index).
"""
