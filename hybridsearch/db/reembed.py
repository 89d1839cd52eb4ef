# WARNING: generated from hybridsearch/db/reembed_async.py by tools/async_to_sync.py.
# DO NOT EDIT: change the source and run `python tools/async_to_sync.py`.
"""A collection's re-embed, step by step (``sql/api/reembed.sql``), for asyncio.

``reembed.py`` beside it is generated from this file by ``tools/async_to_sync.py``.

The new table is filled in passes: every chunk the table lacks is embedded (through the
embedding cache, under the new model's key) and written, rows whose chunk is gone are
pruned, and each pass catches up with what writers did during the one before. The search
indexes are built once the bulk is in; a last pass then runs in the switch's own
transaction, under the lock that makes writers wait, so nothing written before the switch
is lost and nothing after it lands in the old table.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
from psycopg.rows import dict_row

from hybridsearch import collections as collections_db
from hybridsearch import embedding_cache as cache
from hybridsearch import reembed
from hybridsearch.collections import Collection
from hybridsearch.db.connection import Connection
from hybridsearch.db.store import embed_with_cache
from hybridsearch.errors import from_database_error
from hybridsearch.models.embedder import Embedder
from hybridsearch.reembed import ReembedReport


def _catch_up(
    conn: Connection,
    collection: Collection,
    embedder: Embedder,
    report: ReembedReport,
    on_progress: Callable[[int], None] | None,
) -> int:
    """One pass: prune, then embed and write every pending chunk; how many were written."""
    name = collection.name
    cur = conn.execute(reembed.PRUNE_SQL, (name,))
    row = cur.fetchone()
    report.pruned += int(row[0]) if row else 0
    written, after = 0, 0
    while True:
        cur = conn.execute(reembed.PENDING_SQL, (name, after, reembed.BATCH_SIZE))
        rows = cur.fetchall()
        if not rows:
            return written
        ids = [int(chunk_id) for chunk_id, _ in rows]
        vectors, computed = embed_with_cache(
            conn,
            embedder,
            [content for _, content in rows],
            document_prompt=collection.settings.document_prompt,
        )
        cur = conn.execute(reembed.WRITE_SQL, (name, ids, list(vectors)))
        row = cur.fetchone()
        written += int(row[0]) if row else 0
        report.embedded += computed
        after = ids[-1]
        if on_progress is not None:
            on_progress(len(ids))


def _switch(
    conn: Connection,
    collection: Collection,
    embedder: Embedder,
    report: ReembedReport,
    on_progress: Callable[[int], None] | None,
) -> Collection:
    """The last catch-up and the switch, in one transaction; given way and tried again
    when its locks are not granted in time (or a deadlock picks it)."""
    for attempt in range(1, reembed.SWITCH_ATTEMPTS + 1):
        try:
            with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                conn.execute(reembed.SET_LOCK_TIMEOUT_SQL, (reembed.SWITCH_LOCK_TIMEOUT,))
                conn.execute(reembed.LOCK_SQL)
                caught_up = _catch_up(conn, collection, embedder, report, on_progress)
                cur.execute(reembed.SWITCH_SQL, (collection.name,))
                row = cur.fetchone()
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
            if attempt == reembed.SWITCH_ATTEMPTS:
                raise
            continue
        assert row is not None  # a function call returns one row
        report.caught_up += caught_up
        report.chunks += caught_up
        return collections_db.collection_from_row(row)
    raise AssertionError("unreachable")


def reembed_collection(
    conn: Connection,
    collection: Collection,
    embedder: Embedder,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> ReembedReport:
    """Re-embed ``collection``'s chunks with ``embedder`` (loaded; its ``model_id`` is what
    the collection will record) and switch the collection to it. ``on_progress`` gets the
    number of chunks of each batch written. An interruption leaves the collection on its
    old model; running this again with the same model resumes where it stopped."""
    started = time.perf_counter()
    name = collection.name
    report = ReembedReport(collection)
    key = cache.model_key(embedder, collection.settings.document_prompt)
    try:
        cur = conn.execute(reembed.START_SQL, (name, embedder.model_id, embedder.dimensions, key))
        row = cur.fetchone()
        report.resumed = bool(row and row[0])
        report.chunks += _catch_up(conn, collection, embedder, report, on_progress)
        conn.execute(reembed.BUILD_INDEXES_SQL, (name,))
        # what writers did during the index build
        written = _catch_up(conn, collection, embedder, report, on_progress)
        report.chunks += written
        report.caught_up += written
        report.collection = _switch(conn, collection, embedder, report, on_progress)
    except psycopg.Error as exc:
        raise from_database_error(exc, f"re-embed collection {name!r}") from exc
    report.seconds = time.perf_counter() - started
    return report


def cancel_reembed(conn: Connection, name: str) -> bool:
    """Drop what an interrupted re-embed of ``name`` left; False when there was nothing."""
    collections_db.check_lookup_name(name)
    try:
        cur = conn.execute(reembed.CANCEL_SQL, (name,))
        row = cur.fetchone()
    except psycopg.Error as exc:
        raise from_database_error(exc, f"cancel the re-embed of {name!r}") from exc
    return bool(row and row[0])
