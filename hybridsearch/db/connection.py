# WARNING: generated from hybridsearch/db/connection_async.py by tools/async_to_sync.py.
# DO NOT EDIT: change the source and run `python tools/async_to_sync.py`.
"""Connections: resolve the database URL, open a pool, check connections out of it.

Written once, for asyncio, in ``connection_async.py``; ``connection.py`` is generated from
it by ``tools/async_to_sync.py``. Every connection has pgvector's types registered, and a
checkout that waits past the pool's timeout raises :class:`DatabaseError`, in both.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool, PoolTimeout

from hybridsearch.config import Settings
from hybridsearch.db.embedded import embedded_database_url
from hybridsearch.errors import DatabaseError, SchemaNotInstalledError

Connection = psycopg.Connection[Any]
Pool = ConnectionPool[Connection]


def database_url(settings: Settings) -> str:
    """HYBRIDSEARCH_DATABASE_URL when set, else the embedded server (started on demand)."""
    if settings.database_url:
        return settings.database_url
    return embedded_database_url(settings.data_dir)


def configure_connection(conn: Connection) -> None:
    """Register the vector types; a clear error when pgvector is not installed."""
    try:
        register_vector(conn)
    except psycopg.ProgrammingError as exc:
        raise SchemaNotInstalledError(
            "the pgvector extension is not installed in this database; "
            "run `hybridsearch db upgrade` (needs a role allowed to CREATE EXTENSION vector)"
        ) from exc


def open_pool(url: str, *, max_size: int = 4, timeout_s: float = 30.0) -> Pool:
    """A small connection pool whose connections have pgvector registered."""
    pool: Pool = ConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        timeout=timeout_s,
        # Autocommit: each call is its own transaction unless wrapped in
        # conn.transaction(), so no connection goes back to the pool mid-transaction.
        kwargs={"autocommit": True},
        configure=configure_connection,
        open=False,
    )
    try:
        pool.open(wait=True, timeout=timeout_s)
    except psycopg.OperationalError as exc:  # PoolTimeout included: no connection came up
        pool.close()  # else its workers go on trying to connect
        raise DatabaseError(f"could not connect to the database: {exc}") from exc
    return pool


@contextmanager
def checkout(pool: Pool) -> Iterator[Connection]:
    """A pooled connection, or a DatabaseError when none frees up within the pool's timeout."""
    try:
        with pool.connection() as conn:
            yield conn
    except PoolTimeout:
        raise DatabaseError(
            f"connection pool exhausted: all {pool.max_size} connections stayed busy "
            f"for {pool.timeout:g} s; raise HYBRIDSEARCH_POOL_SIZE or retry later"
        ) from None
