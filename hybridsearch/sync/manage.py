# WARNING: generated from hybridsearch/sync/manage_async.py by tools/async_to_sync.py.
# DO NOT EDIT: change the source and run `python tools/async_to_sync.py`.
"""Declare, remove, retry and inspect synced tables, written once, for asyncio.

``manage.py`` is generated from this file by ``tools/async_to_sync.py``. Each step calls
the SQL function a SQL user calls (``sql/api/sync.sql``) on a connection the caller
checked out, in autocommit mode: every call is its own short transaction, so the
triggers' lock on the application's table is held only while they are created, and
each backfill batch commits on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg.rows import dict_row

from hybridsearch.db.connection import Connection
from hybridsearch.errors import InvalidInputError, from_database_error
from hybridsearch.sync import queue
from hybridsearch.sync.status import FAILURES_SQL, STATUS_SQL, SyncFailure, SyncStatus

#: Rows a backfill batch queues: small enough that each batch commits in milliseconds.
BACKFILL_BATCH = 1000

_RESOLVE_TABLE_SQL = "SELECT pg_catalog.to_regclass(%s)::text"
_SYNC_TABLE_SQL = "SELECT hybridsearch.sync_table(%s, %s::regclass, %s, %s, %s, %s)"
_UNSYNC_TABLE_SQL = "SELECT hybridsearch.unsync_table(%s, %s::regclass)"
_RETRY_SQL = "SELECT hybridsearch.sync_retry(%s, %s::regclass)"


def checked_columns(
    text_columns: Sequence[str], metadata_columns: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The column lists as lists of names; InvalidInputError for a bare string (which
    would read as its characters) or an empty name. The SQL checks that they exist."""
    lists = []
    for what, columns in (("text_columns", text_columns), ("metadata_columns", metadata_columns)):
        if isinstance(columns, str) or not all(isinstance(c, str) and c for c in columns):
            raise InvalidInputError(f"{what} must be a list of column names, got {columns!r}")
        lists.append(list(columns))
    if not lists[0]:
        raise InvalidInputError("text_columns must name at least one column")
    return lists[0], lists[1]


def check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch size must be a positive integer, got {batch_size!r}")


def resolve_table(conn: Connection, table: str) -> str:
    """The table named ``table`` (``schema.table``, or as the search path finds it), as
    PostgreSQL spells it; InvalidInputError when there is none."""
    try:
        cur = conn.execute(_RESOLVE_TABLE_SQL, (table,))
        row = cur.fetchone()
    except psycopg.Error as exc:  # e.g. a malformed name
        raise InvalidInputError(f"{table!r} is not a table name: {exc}") from exc
    if row is None or row[0] is None:
        raise InvalidInputError(
            f"table {table!r} does not exist; name it as SCHEMA.TABLE (e.g. public.articles)"
        )
    return str(row[0])


def sync_table(
    conn: Connection,
    collection: str,
    table: str,
    *,
    id_column: str,
    text_columns: list[str],
    metadata_columns: list[str],
    tenant_column: str | None,
    backfill: bool = True,
) -> int:
    """Sync ``table`` into ``collection`` and queue its existing rows (unless
    ``backfill`` is False: the worker then queues them, a batch per round); how many
    rows were queued."""
    name = resolve_table(conn, table)
    params = (collection, name, id_column, text_columns, metadata_columns, tenant_column)
    try:
        cur = conn.execute(_SYNC_TABLE_SQL, params)
        row = cur.fetchone()
    except psycopg.Error as exc:
        raise from_database_error(exc, f"syncing {name} into {collection!r}") from exc
    assert row is not None
    return backfill_table(conn, int(row[0])) if backfill else 0


def backfill_table(conn: Connection, sync_id: int) -> int:
    """Queue every row of a synced table not queued yet, a batch per transaction."""
    queued = 0
    while True:
        try:
            cur = conn.execute(queue.BACKFILL_SQL, (sync_id, BACKFILL_BATCH))
            row = cur.fetchone()
        except psycopg.Error as exc:
            raise from_database_error(exc, "queueing the rows of a synced table") from exc
        batch = int(row[0]) if row else 0
        queued += batch
        if batch == 0:
            return queued


def unsync_table(conn: Connection, collection: str, table: str) -> bool:
    """Stop syncing ``table`` into ``collection``; False when it was not synced."""
    name = resolve_table(conn, table)
    try:
        cur = conn.execute(_UNSYNC_TABLE_SQL, (collection, name))
        row = cur.fetchone()
    except psycopg.Error as exc:
        raise from_database_error(exc, f"unsyncing {name} from {collection!r}") from exc
    return bool(row and row[0])


def retry(conn: Connection, collection: str | None, table: str | None) -> int:
    """Queue the failed rows again (all, or a collection's, or one table's); how many."""
    name = resolve_table(conn, table) if table is not None else None
    try:
        cur = conn.execute(_RETRY_SQL, (collection, name))
        row = cur.fetchone()
    except psycopg.Error as exc:
        raise from_database_error(exc, "queueing failed rows again") from exc
    return int(row[0]) if row else 0


def status(conn: Connection, *, failures: int = 20) -> list[SyncStatus]:
    """Every synced table with its queue, lag and (up to ``failures``) failed rows."""
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(STATUS_SQL)
            tables = cur.fetchall()
        result = []
        for table in tables:
            cur2 = conn.execute(FAILURES_SQL, (table["sync_id"], failures))
            failed = [SyncFailure(*row) for row in cur2.fetchall()]
            result.append(SyncStatus.from_row(table, failed))
    except psycopg.Error as exc:
        raise from_database_error(exc, "reading the sync status") from exc
    return result
