"""The sync worker, written once, for asyncio: queued rows → documents.

``worker.py`` is generated from this file by ``tools/async_to_sync.py``.

Each round is one transaction on the worker's own connection: claim entries
(``FOR UPDATE SKIP LOCKED``), lock their rows' keys, read the rows as they are now,
write or delete their documents through the ingest (:func:`hybridsearch.db.store.
ingest_documents`: chunking, the embedding cache, content-hash idempotence), record the
rows that fail, and delete the entries — all committed together. The claim holds across
the embedding, so the connection stays in its transaction meanwhile: it is the worker's
own, never a pooled one a search could be waiting for. A worker killed at any point
loses nothing: its transaction rolls back, the entries' locks go with its connection and
the next round (of any worker) claims them again. Writing the same content twice is a
no-op by content hash, so an entry processed twice costs a hash lookup.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import psycopg

from hybridsearch import ingest
from hybridsearch.collections import Collection
from hybridsearch.db import store_async
from hybridsearch.db.connection_async import AsyncConnection, configure_connection
from hybridsearch.errors import DatabaseError, DocumentError, HybridSearchError, from_database_error
from hybridsearch.ingest import Document, validate_document
from hybridsearch.models.embedder import Embedder
from hybridsearch.sync import queue
from hybridsearch.sync.queue import Entry, Row, SyncSpec

EmbedderFor = Callable[[Collection], Embedder]

#: Queue entries a round claims (``hybridsearch sync run --batch``).
BATCH = 64
#: Seconds a waiting worker sleeps between looks at the queue when no notification
#: arrives (a missed one, or a listener's connection that was replaced).
POLL_INTERVAL_S = 5.0
#: Seconds to wait before claiming again when every claimed row was another worker's.
_BUSY_PAUSE_S = 0.05
#: SQLSTATEs after which the round is tried again instead of its rows recorded as
#: failed: deadlock, serialization failure, lock not available.
TRANSIENT = frozenset(("40P01", "40001", "55P03"))


def transient(error: BaseException) -> bool:
    """Whether ``error`` (or the database error behind it) passes if tried again."""
    cause = error if isinstance(error, psycopg.Error) else error.__cause__
    return isinstance(cause, psycopg.Error) and cause.sqlstate in TRANSIENT


@dataclass
class RoundReport:
    """What one round (or, summed, a run) did."""

    claimed: int = 0
    #: entries left queued because another worker held their row
    skipped: int = 0
    written: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    #: rows queued by a backfill step
    backfilled: int = 0
    #: rounds rolled back by a deadlock and tried again
    retried: int = 0
    #: collections that gained or changed documents
    collections: set[str] = field(default_factory=set)
    #: what the caller should know (a calibration that failed after a write)
    warnings: list[str] = field(default_factory=list)

    def add(self, other: RoundReport) -> None:
        counts = ("claimed", "skipped", "written", "unchanged", "deleted", "failed", "retried")
        for name in counts:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.backfilled += other.backfilled
        self.collections |= other.collections
        self.warnings += other.warnings

    def describe(self) -> str:
        return (
            f"{self.written} written, {self.unchanged} unchanged, {self.deleted} deleted, "
            f"{self.failed} failed"
        )


async def connect(url: str, *, listen: bool = True) -> AsyncConnection:
    """A connection of the worker's own (autocommit, pgvector registered): its rounds'
    (listening for the triggers' notifications), or, ``listen=False``, its cache's."""
    try:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"could not connect to the database: {exc}") from exc
    await configure_connection(conn)
    if listen:
        await conn.execute(queue.LISTEN_SQL)
    return conn


async def backfill_step(conn: AsyncConnection, batch_size: int = 1000) -> int:
    """Queue the next batch of every synced table whose backfill is not done."""
    try:
        cur = await conn.execute(queue.PENDING_BACKFILLS_SQL)
        pending = [row[0] for row in await cur.fetchall()]
        queued = 0
        for sync_id in pending:
            cur = await conn.execute(queue.BACKFILL_SQL, (sync_id, batch_size))
            row = await cur.fetchone()
            queued += int(row[0]) if row else 0
    except psycopg.Error as exc:
        raise from_database_error(exc, "queueing the rows of a synced table") from exc
    return queued


async def _read_rows(
    conn: AsyncConnection, spec: SyncSpec, row_ids: Sequence[str], failures: dict[str, str]
) -> dict[str, Row]:
    """The rows of ``row_ids`` that exist now. A row that cannot be read (a value that
    does not convert) goes to ``failures``; the rest are read one by one then."""
    query = spec.read_query()
    try:
        async with conn.transaction():
            cur = await conn.execute(query, (list(row_ids),))
            return {row.row_id: row for row in map(spec.row_from, await cur.fetchall())}
    except psycopg.Error as exc:
        if conn.broken or len(row_ids) == 1:
            if conn.broken:
                raise from_database_error(exc, f"reading {spec.table}") from exc
            failures[row_ids[0]] = queue.describe(exc)
            return {}
    rows: dict[str, Row] = {}
    for row_id in row_ids:
        rows.update(await _read_rows(conn, spec, [row_id], failures))
    return rows


async def _embed_ahead(
    cache: AsyncConnection | None,
    collection: Collection,
    embedder: Embedder,
    documents: list[Document],
) -> None:
    """Embed the documents' chunks into the embedding cache on ``cache``, an autocommit
    connection, before the round writes anything: its cache rows commit at once, so the
    round's own transaction only reads them, and two workers that embed the same text
    never wait on each other's uncommitted cache rows (a deadlock, once each holds some).
    A failure here is left for the write, which records it per document."""
    if cache is None:
        return
    latest = {d.id: d for d in documents}
    try:
        prepared, _ = await asyncio.to_thread(ingest.plan_batch, latest, {}, collection)
        texts = [text for p in prepared for text in p.chunks]
        prompt = collection.settings.document_prompt
        await store_async.embed_with_cache(cache, embedder, texts, document_prompt=prompt)
    except Exception:  # the write below meets the same error and records it
        if cache.broken:
            raise


async def _write(
    conn: AsyncConnection,
    collection: Collection,
    embedder_for: EmbedderFor,
    documents: list[Document],
    tenant: str,
    report: RoundReport,
    failures: dict[str, str],
) -> None:
    """Write one tenant's documents in a savepoint; when that fails, each on its own, so
    that only the documents that fail by themselves are recorded as failed."""
    try:
        async with conn.transaction():
            done = await store_async.ingest_documents(
                conn,
                collection,
                embedder_for(collection),
                documents,
                batch_size=len(documents),
                tenant=tenant,
            )
    except Exception as exc:  # a model's errors come in many types: record, don't stop
        if conn.broken or transient(exc):
            raise
        if len(documents) == 1:
            failures[documents[0].id] = queue.describe(exc)
            return
        for document in documents:
            await _write(conn, collection, embedder_for, [document], tenant, report, failures)
        return
    report.written += done.added + done.updated
    report.unchanged += done.unchanged
    if done.added or done.updated:
        report.collections.add(collection.name)


async def _apply(
    conn: AsyncConnection,
    spec: SyncSpec,
    entries: list[Entry],
    embedder_for: EmbedderFor,
    max_document_chars: int,
    report: RoundReport,
    cache: AsyncConnection | None,
) -> None:
    """Bring one synced table's claimed rows into its collection; record the failures."""
    row_ids = list(dict.fromkeys(e.row_id for e in entries))
    failures: dict[str, str] = {}
    if spec.id_type not in queue.ID_TYPES:
        problem = f"table {spec.table} or its id column {spec.id_column!r} no longer exists"
        failures = dict.fromkeys(row_ids, problem)
        rows: dict[str, Row] = {}
    else:
        rows = await _read_rows(conn, spec, row_ids, failures)
    unread = [e for e in entries if e.row_id not in failures]
    changes = queue.plan(unread, rows)
    collection = await store_async.get_collection(conn, spec.collection)
    for tenant, ids in changes.deletes.items():
        report.deleted += await store_async.delete_documents(conn, collection, ids, tenant)
    for tenant, documents in changes.writes.items():
        valid = []
        for document in documents:
            try:
                valid.append(validate_document(document, max_document_chars))
            except DocumentError as exc:
                failures[document.id] = queue.describe(exc)
        if valid:
            await _embed_ahead(cache, collection, embedder_for(collection), valid)
            await _write(conn, collection, embedder_for, valid, tenant, report, failures)
    tenant_of = {e.row_id: e.tenant for e in entries} | {r: rows[r].tenant for r in rows}
    try:
        done = [r for r in row_ids if r not in failures]
        await conn.execute(queue.CLEAR_FAILURES_SQL, (spec.sync_id, done))
        if failures:
            ids = list(failures)
            params = (spec.sync_id, ids, [tenant_of[i] for i in ids], list(failures.values()))
            await conn.execute(queue.RECORD_FAILURES_SQL, params)
    except psycopg.Error as exc:
        raise from_database_error(exc, f"recording the sync of {spec.table}") from exc
    report.failed += len(failures)


async def _specs(conn: AsyncConnection, sync_ids: set[int]) -> dict[int, SyncSpec]:
    cur = await conn.execute(queue.SPECS_SQL, (sorted(sync_ids),))
    return {spec.sync_id: spec for spec in map(SyncSpec.from_row, await cur.fetchall())}


async def run_round(
    conn: AsyncConnection,
    embedder_for: EmbedderFor,
    *,
    batch_size: int = BATCH,
    max_document_chars: int = 2_000_000,
    cache: AsyncConnection | None = None,
) -> RoundReport:
    """Claim up to ``batch_size`` queue entries and apply them, in one transaction.

    ``cache``: a second autocommit connection for the embedding cache (see
    :func:`_embed_ahead`); without it the round embeds inside its transaction."""
    report = RoundReport()
    try:
        async with conn.transaction():
            cur = await conn.execute(queue.CLAIM_SQL, (batch_size,))
            claimed = await cur.fetchall()
            if not claimed:
                return report
            entries = queue.expand(claimed)
            taken, left = entries[:batch_size], entries[batch_size:]
            report.claimed = len(taken)
            keys = sorted({(e.sync_id, e.row_id) for e in taken})
            params = ([k[0] for k in keys], [k[1] for k in keys])
            cur = await conn.execute(queue.LOCK_ROWS_SQL, params)
            locked = {(sync_id, row_id) for sync_id, row_id in await cur.fetchall()}
            mine = [e for e in taken if (e.sync_id, e.row_id) in locked]
            report.skipped = len(taken) - len(mine)
            left += [e for e in taken if (e.sync_id, e.row_id) not in locked]
            specs = await _specs(conn, {e.sync_id for e in mine})
            for sync_id in sorted({e.sync_id for e in mine}):
                spec = specs.get(sync_id)
                if spec is not None:  # else unsynced since: nothing to write
                    group = [e for e in mine if e.sync_id == sync_id]
                    await _apply(conn, spec, group, embedder_for, max_document_chars, report, cache)
            if left:
                async with conn.cursor() as requeue:
                    await requeue.executemany(
                        queue.REQUEUE_SQL, queue.requeue_params(left, batch_size)
                    )
            await conn.execute(queue.DELETE_ENTRIES_SQL, ([row[0] for row in claimed],))
    except psycopg.Error as exc:
        raise from_database_error(exc, "syncing queued rows") from exc
    return report


async def _wait(conn: AsyncConnection, timeout_s: float, stop: threading.Event | None) -> None:
    """Until a notification, ``timeout_s`` or ``stop``: in slices of a second at most,
    so that a stop (a signal handler's) is seen within one."""
    deadline = time.monotonic() + timeout_s
    while stop is None or not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        async for _ in conn.notifies(timeout=min(left, 1.0), stop_after=1):
            return


async def rounds(
    conn: AsyncConnection,
    embedder_for: EmbedderFor,
    *,
    once: bool = False,
    batch_size: int = BATCH,
    max_document_chars: int = 2_000_000,
    poll_interval_s: float = POLL_INTERVAL_S,
    stop: threading.Event | None = None,
    cache: AsyncConnection | None = None,
) -> AsyncIterator[RoundReport]:
    """Run rounds on ``conn`` (from :func:`connect`), yielding each one's report.

    ``once``: stop when the queue has nothing left to claim and every backfill is done.
    Otherwise wait for a notification (or ``poll_interval_s``) and go on, until
    ``stop`` is set; a round in progress is finished first. A round that meets a
    deadlock is rolled back and tried again (its report counts it in ``retried``).
    """
    while stop is None or not stop.is_set():
        try:
            done = await run_round(
                conn,
                embedder_for,
                batch_size=batch_size,
                max_document_chars=max_document_chars,
                cache=cache,
            )
        except HybridSearchError as exc:
            if not transient(exc):
                raise
            yield RoundReport(retried=1)
            await asyncio.to_thread(time.sleep, random.uniform(0, 2 * _BUSY_PAUSE_S))
            continue
        done.backfilled = await backfill_step(conn)
        yield done
        if done.claimed > done.skipped or done.backfilled:
            continue
        if done.claimed:  # all of it another worker's rows: let that worker commit
            await asyncio.to_thread(time.sleep, _BUSY_PAUSE_S)
        elif once:
            return
        else:
            await _wait(conn, poll_interval_s, stop)
