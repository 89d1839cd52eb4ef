"""Bulk loads: drop a collection's search indexes, write, rebuild them once.

Maintaining an HNSW graph and three GIN indexes row by row costs several times the write
itself; building them once over the loaded rows (HNSW with parallel workers) is far
cheaper. While the indexes are down the collection stays searchable and correct, only
slower: searches fall back to exact scans. The rebuild runs even when the load fails,
and ``hybridsearch.create_chunk_indexes`` (idempotent) restores a load that was killed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from hybridsearch.collections import Collection
from hybridsearch.errors import from_database_error

DROP_INDEXES_SQL = "SELECT hybridsearch.drop_chunk_indexes(%s)"
CREATE_INDEXES_SQL = "SELECT hybridsearch.create_chunk_indexes(%s)"


def analyze_sql(collection: Collection) -> sql.Composed:
    """ANALYZE of the collection's partition: fresh statistics for the rebuilt indexes."""
    return sql.SQL("ANALYZE {}").format(collection.partition)


def rebuild_indexes(
    conn: psycopg.Connection,
    collection: Collection,
    *,
    maintenance_work_mem: str | None = None,
    parallel_workers: int | None = None,
) -> int:
    """Build the collection's missing search indexes and refresh its planner statistics.

    ``maintenance_work_mem`` (e.g. ``"2GB"``) should hold the whole HNSW graph: a build
    that outgrows it slows down many times. ``parallel_workers`` sets
    ``max_parallel_maintenance_workers`` for the build. Returns how many were built.
    """
    try:
        with conn.transaction():
            if maintenance_work_mem is not None:
                conn.execute(
                    "SELECT set_config('maintenance_work_mem', %s, true)", (maintenance_work_mem,)
                )
            if parallel_workers is not None:
                conn.execute(
                    "SELECT set_config('max_parallel_maintenance_workers', %s, true)",
                    (str(parallel_workers),),
                )
            row = conn.execute(CREATE_INDEXES_SQL, (collection.name,)).fetchone()
            conn.execute(analyze_sql(collection))
    except psycopg.Error as exc:
        raise from_database_error(exc, f"build the indexes of {collection.name!r}") from exc
    return int(row[0]) if row else 0


@contextmanager
def deferred_indexes(
    conn: psycopg.Connection,
    collection: Collection,
    *,
    maintenance_work_mem: str | None = None,
    parallel_workers: int | None = None,
) -> Iterator[None]:
    """Run the body (a bulk load on ``conn``) with the collection's search indexes dropped.

    Worth it when the load is large next to what the collection already holds: the
    rebuild covers every row, old and new. Other sessions can search meanwhile, slowly.
    """
    try:
        with conn.transaction():
            conn.execute(DROP_INDEXES_SQL, (collection.name,))
    except psycopg.Error as exc:
        raise from_database_error(exc, f"drop the indexes of {collection.name!r}") from exc
    try:
        yield
    finally:
        rebuild_indexes(
            conn,
            collection,
            maintenance_work_mem=maintenance_work_mem,
            parallel_workers=parallel_workers,
        )
