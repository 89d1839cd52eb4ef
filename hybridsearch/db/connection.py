"""Connections: resolve the database URL and register pgvector on every connection."""

from __future__ import annotations

import psycopg
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool

from hybridsearch.config import Settings
from hybridsearch.db.embedded import embedded_database_url
from hybridsearch.errors import DatabaseError, SchemaNotInstalledError


def database_url(settings: Settings) -> str:
    """HYBRIDSEARCH_DATABASE_URL when set, else the embedded server (started on demand)."""
    if settings.database_url:
        return settings.database_url
    return embedded_database_url(settings.data_dir)


def configure_connection(conn: psycopg.Connection) -> None:
    """Register the vector types; a clear error when pgvector is not installed."""
    try:
        register_vector(conn)
    except psycopg.ProgrammingError as exc:
        raise SchemaNotInstalledError(
            "the pgvector extension is not installed in this database; "
            "run `hybridsearch db upgrade` (needs a role allowed to CREATE EXTENSION vector)"
        ) from exc


def open_pool(url: str, *, max_size: int = 4, timeout_s: float = 30.0) -> ConnectionPool:
    """A small connection pool whose connections have pgvector registered."""
    try:
        pool = ConnectionPool(
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
        pool.open(wait=True, timeout=timeout_s)
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"could not connect to the database: {exc}") from exc
    return pool
