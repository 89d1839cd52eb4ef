"""The sync queue's SQL and the pure steps of a worker round.

A round (:func:`hybridsearch.sync.worker.run_round`) claims queue entries, locks their
rows' keys, reads those rows as they are now, and turns them into document writes and
deletes: this module holds that SQL and the plan from entries and rows to writes.

Ordering: entries are claimed with ``FOR UPDATE SKIP LOCKED``, then each (table, row)
key with a transaction-level advisory lock *before* the row is read, in a statement of
its own. Two workers that claimed entries of the same row therefore never both write
it: the second skips the entry (it stays queued) until the first has committed, and
then reads the row as the first left it. A row is read in a snapshot taken after every
entry claimed for it was committed, so the write reflects at least those changes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import sql

from hybridsearch.ingest import Document

#: The channel hybridsearch.sync_enqueue notifies; a waiting worker listens on it.
CHANNEL = "hybridsearch_sync"
LISTEN_SQL = "LISTEN hybridsearch_sync"

CLAIM_SQL = """
    SELECT q.entry_id, q.sync_id, q.row_ids, q.tenant_ids, q.enqueued_at
    FROM hybridsearch.sync_queue AS q
    ORDER BY q.entry_id
    LIMIT %s
    FOR UPDATE SKIP LOCKED
"""
# Rows of claimed entries that a round does not take (past its batch, or held by another
# worker) go back to the queue as new entries, with the time they were first queued.
REQUEUE_SQL = """
    INSERT INTO hybridsearch.sync_queue (sync_id, row_ids, tenant_ids, operation, enqueued_at)
    VALUES (%s, %s, %s, 'S', %s)
"""
# The keys this transaction could lock: (sync_id, row_id) pairs, as two arrays. A hash
# collision with another key (or an application's own advisory lock) only makes an
# entry wait a round.
LOCK_ROWS_SQL = """
    SELECT k.sync_id, k.row_id
    FROM unnest(%s::integer[], %s::text[]) AS k(sync_id, row_id)
    WHERE pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtextextended(
        'hybridsearch.sync:' || k.sync_id || ':' || k.row_id, 0))
"""
# id_type is NULL when the table or its id column is gone.
SPECS_SQL = """
    SELECT s.sync_id, c.name, s.table_schema, s.table_name, s.id_column,
           s.text_columns, s.metadata_columns, s.tenant_column,
           (SELECT a.atttypid::regtype::text FROM pg_catalog.pg_attribute AS a
            WHERE a.attrelid = pg_catalog.to_regclass(
                      pg_catalog.quote_ident(s.table_schema) || '.'
                      || pg_catalog.quote_ident(s.table_name))
              AND a.attname = s.id_column AND a.attnum > 0 AND NOT a.attisdropped)
    FROM hybridsearch.synced_tables AS s
    JOIN hybridsearch.collections AS c ON c.collection_id = s.collection_id
    WHERE s.sync_id = ANY(%s)
"""
DELETE_ENTRIES_SQL = "DELETE FROM hybridsearch.sync_queue WHERE entry_id = ANY(%s)"
RECORD_FAILURES_SQL = """
    INSERT INTO hybridsearch.sync_failures AS f (sync_id, row_id, tenant_id, error)
    SELECT %s, k.row_id, k.tenant_id, k.error
    FROM unnest(%s::text[], %s::text[], %s::text[]) AS k(row_id, tenant_id, error)
    ON CONFLICT (sync_id, row_id, tenant_id) DO UPDATE
        SET error = EXCLUDED.error, failed_at = pg_catalog.now()
"""
CLEAR_FAILURES_SQL = (
    "DELETE FROM hybridsearch.sync_failures WHERE sync_id = %s AND row_id = ANY(%s)"
)
PENDING_BACKFILLS_SQL = (
    "SELECT sync_id FROM hybridsearch.synced_tables WHERE NOT backfill_done ORDER BY sync_id"
)
BACKFILL_SQL = "SELECT hybridsearch.sync_backfill(%s, %s)"

# The id types hybridsearch.sync_id_types() allows, as regtype prints them: the read
# casts the queued ids back to the column's type (so the lookup uses its index).
ID_TYPES = frozenset(("smallint", "integer", "bigint", "text", "character varying", "uuid"))
#: Separates a row's text columns in its document (empty and NULL ones are left out).
TEXT_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Entry:
    """One queued change: a row of a synced table, and the tenant it had then."""

    sync_id: int
    row_id: str
    tenant: str
    enqueued_at: datetime


def expand(claimed: Iterable[Sequence[Any]]) -> list[Entry]:
    """Claimed queue rows (one per statement, many rows each) as one entry per row."""
    return [
        Entry(sync_id, row_id, tenant, at)
        for _, sync_id, row_ids, tenants, at in claimed
        for row_id, tenant in zip(row_ids, tenants, strict=True)
    ]


def requeue_params(entries: Sequence[Entry], piece: int) -> list[tuple[Any, ...]]:
    """Parameters for :data:`REQUEUE_SQL`: ``entries`` in pieces of at most ``piece``
    rows, by table and first queued time (a split entry is split once, not per round)."""
    groups: dict[tuple[int, datetime], list[Entry]] = defaultdict(list)
    for entry in entries:
        groups[(entry.sync_id, entry.enqueued_at)].append(entry)
    params = []
    for (sync_id, at), group in groups.items():
        for start in range(0, len(group), piece):
            part = group[start : start + piece]
            params.append((sync_id, [e.row_id for e in part], [e.tenant for e in part], at))
    return params


@dataclass(frozen=True)
class SyncSpec:
    """A synced table as the worker reads it (a row of hybridsearch.synced_tables)."""

    sync_id: int
    collection: str
    table_schema: str
    table_name: str
    id_column: str
    text_columns: tuple[str, ...]
    metadata_columns: tuple[str, ...]
    tenant_column: str | None
    #: the id column's type, or None when the table or the column is gone
    id_type: str | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> SyncSpec:
        sync_id, collection, schema, name, id_column, texts, metadata, tenant, id_type = row
        return cls(
            sync_id, collection, schema, name, id_column, tuple(texts), tuple(metadata),
            tenant, id_type,
        )  # fmt: skip

    @property
    def table(self) -> str:
        return sql.Identifier(self.table_schema, self.table_name).as_string(None)

    def read_query(self) -> sql.Composed:
        """SELECT id, tenant, each text column as text, each metadata column as jsonb,
        of the rows whose ids are the parameter (a text array)."""
        assert self.id_type in ID_TYPES, self.id_type  # the lookup casts to it
        row = sql.Identifier("t")
        tenant: sql.Composable = (
            sql.SQL("coalesce({}::text, '')").format(sql.Identifier("t", self.tenant_column))
            if self.tenant_column
            else sql.SQL("''")
        )
        texts = [sql.SQL("{}::text").format(sql.Identifier("t", c)) for c in self.text_columns]
        metadata = [
            sql.SQL("pg_catalog.to_jsonb({})").format(sql.Identifier("t", c))
            for c in self.metadata_columns
        ]
        return sql.SQL(
            "SELECT {id}::text, {columns} FROM {table} AS {row}"
            " WHERE {id} = ANY(%s::text[]::{type}[])"
        ).format(
            id=sql.Identifier("t", self.id_column),
            columns=sql.SQL(", ").join([tenant, *texts, *metadata]),
            table=sql.Identifier(self.table_schema, self.table_name),
            row=row,
            type=sql.SQL(self.id_type),
        )

    def row_from(self, values: Sequence[Any]) -> Row:
        """A row of :meth:`read_query` as a document's parts."""
        row_id, tenant, *rest = values
        texts = rest[: len(self.text_columns)]
        metadata = dict(zip(self.metadata_columns, rest[len(self.text_columns) :], strict=True))
        text = TEXT_SEPARATOR.join(t for t in texts if t is not None and t.strip())
        return Row(row_id, tenant, text, metadata)


@dataclass(frozen=True)
class Row:
    """A synced row as it is now: its document's id, tenant, text and metadata."""

    row_id: str
    tenant: str
    text: str
    metadata: dict[str, Any]


@dataclass
class Plan:
    """What one synced table's claimed entries come to."""

    #: tenant -> ids of the documents to delete (rows gone, moved or emptied)
    deletes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    #: tenant -> documents to write (unchanged ones are skipped by the ingest's hash)
    writes: dict[str, list[Document]] = field(default_factory=lambda: defaultdict(list))


def plan(entries: Iterable[Entry], rows: Mapping[str, Row]) -> Plan:
    """Entries of one synced table and its rows read now (absent: deleted) → writes.

    A row's document is written under its tenant now, and deleted under every other
    tenant an entry named (an UPDATE moved it); a deleted row's documents are deleted,
    and a row whose text columns are all empty or NULL has no document.
    """
    tenants: dict[str, set[str]] = {}
    for entry in entries:
        tenants.setdefault(entry.row_id, set()).add(entry.tenant)
    result = Plan()
    for row_id, named in tenants.items():
        row = rows.get(row_id)
        for tenant in sorted(named - ({row.tenant} if row else set())):
            result.deletes[tenant].append(row_id)
        if row is None:
            continue
        if row.text:
            result.writes[row.tenant].append(Document(row_id, row.text, row.metadata))
        else:
            result.deletes[row.tenant].append(row_id)
    return result


def describe(error: BaseException) -> str:
    """A failure as sync_failures keeps it: the error's class and message."""
    return f"{type(error).__name__}: {error}"
