"""Connections: resolve the database URL, open a pool, check connections out of it.

Written once, for asyncio, in ``connection_async.py``; ``connection.py`` is generated from
it by ``tools/async_to_sync.py``. Every connection has pgvector's types registered, and a
checkout that waits past the pool's timeout raises :class:`DatabaseError`, in both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from pgvector.psycopg import register_vector_async
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from hybridsearch.config import Settings
from hybridsearch.db.embedded import embedded_database_url
from hybridsearch.errors import DatabaseError, SchemaNotInstalledError

AsyncConnection = psycopg.AsyncConnection[Any]
AsyncPool = AsyncConnectionPool[AsyncConnection]


def database_url(settings: Settings) -> str:
    """HYBRIDSEARCH_DATABASE_URL when set, else the embedded server (started on demand)."""
    if settings.database_url:
        return settings.database_url
    return embedded_database_url(settings.data_dir)


async def configure_connection(conn: AsyncConnection) -> None:
    """Register the vector types; a clear error when pgvector is not installed."""
    try:
        await register_vector_async(conn)
    except psycopg.ProgrammingError as exc:
        raise SchemaNotInstalledError(
            "the pgvector extension is not installed in this database; "
            "run `hybridsearch db upgrade` (needs a role allowed to CREATE EXTENSION vector)"
        ) from exc


async def open_pool(url: str, *, max_size: int = 4, timeout_s: float = 30.0) -> AsyncPool:
    """A small connection pool whose connections have pgvector registered."""
    pool: AsyncPool = AsyncConnectionPool(
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
        await pool.open(wait=True, timeout=timeout_s)
    except psycopg.OperationalError as exc:  # PoolTimeout included: no connection came up
        await pool.close()  # else its workers go on trying to connect
        raise DatabaseError(f"could not connect to the database: {exc}") from exc
    return pool


@asynccontextmanager
async def checkout(pool: AsyncPool) -> AsyncIterator[AsyncConnection]:
    """A pooled connection, or a DatabaseError when none frees up within the pool's timeout."""
    try:
        async with pool.connection() as conn:
            yield conn
    except PoolTimeout:
        raise DatabaseError(
            f"connection pool exhausted: all {pool.max_size} connections stayed busy "
            f"for {pool.timeout:g} s; raise HYBRIDSEARCH_POOL_SIZE or retry later"
        ) from None
