"""Bulk loads: drop a collection's search indexes, write, rebuild them once.

Maintaining an HNSW graph and three GIN indexes row by row costs several times the write
itself; building them once over the loaded rows (HNSW with parallel workers) is far
cheaper. While the indexes are down the collection stays searchable and correct, only
slower: searches fall back to exact scans. The rebuild runs even when the load fails,
and ``hybridsearch.create_chunk_indexes`` (idempotent) restores a load that was killed.

:func:`hybridsearch.db.store.deferred_indexes` runs a load so, and
:func:`~hybridsearch.db.store.rebuild_indexes` builds missing indexes; both take the
build's ``maintenance_work_mem`` and parallel workers, the sync and async clients alike.
"""

from __future__ import annotations

from psycopg import sql

from hybridsearch.collections import Collection

DROP_INDEXES_SQL = "SELECT hybridsearch.drop_chunk_indexes(%s)"
CREATE_INDEXES_SQL = "SELECT hybridsearch.create_chunk_indexes(%s)"
# A setting for the rest of the transaction: (name, value).
SET_LOCAL_SQL = "SELECT set_config(%s, %s, true)"


def analyze_sql(collection: Collection) -> sql.Composed:
    """ANALYZE of the collection's partition: fresh statistics for the rebuilt indexes."""
    return sql.SQL("ANALYZE {}").format(collection.partition)
