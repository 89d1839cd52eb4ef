# WARNING: generated from hybridsearch/db/store_async.py by tools/async_to_sync.py.
# DO NOT EDIT: change the source and run `python tools/async_to_sync.py`.
"""Every database step of hybridsearch, written once, for asyncio.

``store.py`` is generated from this file by ``tools/async_to_sync.py``: the sync client
(and tests, benchmarks, SQL-minded callers) call it with a ``psycopg.Connection``, the
async client awaits this one with an ``AsyncConnection``. The SQL and the pure steps
(validation, parameters, rows to results) live with their concept, in
:mod:`hybridsearch.collections`, :mod:`~hybridsearch.ingest`,
:mod:`~hybridsearch.embedding_cache`, :mod:`~hybridsearch.bulk`,
:mod:`~hybridsearch.search` and :mod:`~hybridsearch.tenancy`; this module runs them.

Every function takes a connection the caller checked out and raises hybridsearch errors
(:func:`~hybridsearch.errors.from_database_error`), never psycopg's. Chunking and model
inference run in worker threads here, so an event loop keeps serving; in the generated
module they are plain calls, except an ingest's embedding: it runs in a thread of its own
in both, to overlap the write of the batch before (:func:`ingest_documents`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from hybridsearch import bulk, ingest, reembed, search, tenancy
from hybridsearch import calibration as calibration_db
from hybridsearch import collections as collections_db
from hybridsearch import embedding_cache as cache
from hybridsearch.collections import (
    Calibration,
    Collection,
    CollectionSettings,
    CollectionStats,
    Distance,
    EfSearchStep,
)
from hybridsearch.db.connection import Connection
from hybridsearch.errors import EmbeddingError, from_database_error
from hybridsearch.ingest import Document, IngestReport, PreparedDocument
from hybridsearch.models.embedder import Embedder
from hybridsearch.models.picker import UnreadScripts
from hybridsearch.search import Hit
from hybridsearch.search_input import SearchOptions


def set_tenant(conn: Connection, tenant: str | None) -> None:
    """Name the tenant of the current transaction; None leaves it unset (see tenancy)."""
    if tenant is not None:
        conn.execute(tenancy.SET_TENANT_SQL, (tenancy.TENANT_SETTING, tenant))


# -- collections -------------------------------------------------------------------------


def create_collection(
    conn: Connection,
    name: str,
    *,
    embedding_model: str,
    dimensions: int,
    distance: Distance = "cosine",
    analyzer: str = "mixed",
    settings: CollectionSettings | None = None,
    bm25_k1: float = 1.2,
    bm25_b: float = 0.75,
) -> Collection:
    """Create a collection and its chunk partition; raises if the name is taken."""
    arguments = collections_db.create_arguments(
        name,
        embedding_model=embedding_model,
        dimensions=dimensions,
        distance=distance,
        analyzer=analyzer,
        settings=settings,
        bm25_k1=bm25_k1,
        bm25_b=bm25_b,
    )
    try:
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(collections_db.CREATE_COLLECTION_SQL, arguments)
            row = cur.fetchone()
    except psycopg.errors.UniqueViolation:
        raise collections_db.exists_error(name) from None
    except psycopg.Error as exc:
        raise from_database_error(exc, f"creating collection {name!r}") from exc
    assert row is not None
    return collections_db.collection_from_row(row)


def _fetch_one(
    conn: Connection, query: str, params: Sequence[Any], action: str
) -> dict[str, Any] | None:
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)
            return cur.fetchone()
    except psycopg.Error as exc:
        raise from_database_error(exc, action) from exc


def get_collection(conn: Connection, name: str) -> Collection:
    """The named collection; raises CollectionNotFoundError when it does not exist."""
    collections_db.check_lookup_name(name)
    query = collections_db.GET_COLLECTION_SQL
    row = _fetch_one(conn, query, (name,), f"look up collection {name!r}")
    if row is None:
        raise collections_db.not_found_error(name)
    return collections_db.collection_from_row(row)


def list_collections(conn: Connection) -> list[CollectionStats]:
    """Every collection with its counts, by name."""
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(collections_db.LIST_COLLECTIONS_SQL)
            rows = cur.fetchall()
    except psycopg.Error as exc:
        raise from_database_error(exc, "listing collections") from exc
    return [collections_db.stats_from_row(row) for row in rows]


def update_settings(conn: Connection, name: str, settings: CollectionSettings) -> Collection:
    """Replace a collection's stored defaults (chunking, prompts, fusion)."""
    collections_db.check_lookup_name(name)
    params = (Jsonb(settings.to_json()), name)
    query = collections_db.UPDATE_SETTINGS_SQL
    row = _fetch_one(conn, query, params, f"updating collection {name!r}")
    if row is None:
        raise collections_db.not_found_error(name)
    return collections_db.collection_from_row(row)


def rebuild_vector_index(conn: Connection, name: str) -> int:
    """Build the collection's HNSW index again with its settings' parameters; the
    ef_search it was calibrated to."""
    collections_db.check_lookup_name(name)
    query = collections_db.REBUILD_VECTOR_INDEX_SQL
    row = _fetch_one(conn, query, (name,), f"rebuild the vector index of {name!r}")
    assert row is not None  # a function call returns one row
    return int(row["rebuild_vector_index"])


def calibrate_ef_search(
    conn: Connection, name: str, target_recall: float, queries: int
) -> list[EfSearchStep]:
    """Measure the collection's HNSW recall and keep the ef_search that reaches the target."""
    collections_db.check_lookup_name(name)
    params = (name, target_recall, queries)
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(collections_db.CALIBRATE_EF_SEARCH_SQL, params)
            rows = cur.fetchall()
    except psycopg.Error as exc:
        raise from_database_error(exc, f"calibrate the vector index of {name!r}") from exc
    return [EfSearchStep(*row) for row in rows]


def chunk_count(conn: Connection, collection: Collection) -> int:
    """The collection's chunks, from the statistics the triggers keep (no scan)."""
    try:
        cur = conn.execute(calibration_db.CHUNK_COUNT_SQL, (collection.collection_id,))
        row = cur.fetchone()
    except psycopg.Error as exc:
        raise from_database_error(exc, f"counting the chunks of {collection.name!r}") from exc
    return int(row[0]) if row else 0


def calibration_sample(
    conn: Connection, collection: Collection
) -> tuple[list[tuple[str, str]], list[dict[str, int]], list[dict[str, int]]]:
    """What a calibration reads (hybridsearch.calibration): the halves of the sampled
    chunks, and the terms of each first half and of each second half under the
    collection's analyzer."""
    try:
        cur = conn.execute(
            calibration_db.SAMPLE_SQL, (collection.collection_id, calibration_db.SAMPLE)
        )
        contents = [row[0] for row in cur.fetchall()]
        pairs = [p for p in map(calibration_db.halves, contents) if p is not None]
        texts = [first for first, _ in pairs] + [second for _, second in pairs]
        cur = conn.execute(calibration_db.TERM_FREQUENCIES_SQL, (texts, collection.analyzer))
        rows = cur.fetchall()
    except psycopg.Error as exc:
        raise from_database_error(exc, f"sampling collection {collection.name!r}") from exc
    terms = calibration_db.term_frequencies(rows, len(texts))
    return pairs, terms[: len(pairs)], terms[len(pairs) :]


def save_calibration(conn: Connection, collection: Collection, result: Calibration) -> Collection:
    """Store a collection's calibration; the collection as it is now."""
    params = (Jsonb(asdict(result)), collection.collection_id)
    query = calibration_db.SET_CALIBRATION_SQL
    row = _fetch_one(conn, query, params, f"calibrating collection {collection.name!r}")
    if row is None:
        raise collections_db.not_found_error(collection.name)
    return collections_db.collection_from_row(row)


def drop_collection(conn: Connection, name: str) -> bool:
    """Drop a collection with its documents and chunks; False when it did not exist."""
    collections_db.check_lookup_name(name)
    try:
        with conn.transaction():
            cur = conn.execute(collections_db.DROP_COLLECTION_SQL, (name,))
            row = cur.fetchone()
    except psycopg.Error as exc:
        raise from_database_error(exc, f"dropping collection {name!r}") from exc
    assert row is not None
    return bool(row[0])


# -- documents ---------------------------------------------------------------------------


def _cached(
    conn: Connection, key: str, texts: Sequence[str]
) -> tuple[list[bytes], dict[bytes, npt.NDArray[np.float32]]]:
    """The hash of each text, and the cached vectors among them by hash."""
    hashes = [cache.text_hash(t) for t in texts]
    cur = conn.execute(cache.SELECT_CACHED_SQL, (key, list(set(hashes))))
    return hashes, cache.cached_vectors(cur.fetchall())


def _keep_fresh(
    conn: Connection,
    embedder: Embedder,
    key: str,
    missing: Sequence[tuple[bytes, str]],
    fresh: npt.NDArray[np.float32],
    vectors: dict[bytes, npt.NDArray[np.float32]],
) -> None:
    """Check the vectors just computed for ``missing``, cache them and add them to ``vectors``."""
    cache.check_fresh(fresh, embedder, len(missing))
    rows = [(key, h, fresh[i]) for i, (h, _) in enumerate(missing)]
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(cache.INSERT_CACHED_SQL, rows)
    for i, (h, _) in enumerate(missing):
        vectors[h] = fresh[i]


def embed_with_cache(
    conn: Connection, embedder: Embedder, texts: Sequence[str], *, document_prompt: str | None
) -> tuple[npt.NDArray[np.float32], int]:
    """Embeddings of ``texts`` in order, and how many had to be computed (not cached)."""
    key = cache.model_key(embedder, document_prompt)
    hashes, vectors = _cached(conn, key, texts)
    missing = cache.missing_texts(hashes, texts, vectors)
    if missing:
        fresh = embedder.embed_documents([t for _, t in missing])
        _keep_fresh(conn, embedder, key, missing, fresh, vectors)
    return np.stack([vectors[h] for h in hashes]), len(missing)


def _stored_hashes(
    conn: Connection, collection: Collection, ids: list[str], tenant: str
) -> dict[str, str]:
    with conn.transaction():
        set_tenant(conn, tenant)
        cur = conn.execute(ingest.STORED_HASHES_SQL, (collection.collection_id, tenant, ids))
        rows = cur.fetchall()
    return {external_id: digest for external_id, digest in rows}


def _write(
    conn: Connection,
    collection: Collection,
    prepared: Sequence[PreparedDocument],
    embeddings: np.ndarray,
    tenant: str,
) -> tuple[int, int]:
    """Upsert documents and replace their chunks in one transaction; (added, updated)."""
    with conn.transaction(), conn.cursor() as cur:
        # first: a re-embed's switch cannot commit between this check and the commit
        cur.execute(reembed.LOCK_EMBEDDING_MODEL_SQL, (collection.collection_id,))
        current = (cur.fetchone() or (None,))[0]
        if current != collection.embedding_model:
            raise reembed.changed_error(collection, current, "write")
        set_tenant(conn, tenant)
        params = ingest.upsert_params(collection, prepared, tenant)
        cur.execute(ingest.UPSERT_DOCUMENTS_SQL, params)
        rows = cur.fetchall()
        document_ids = {external_id: document_id for external_id, document_id, _ in rows}
        replaced = [document_id for _, document_id, inserted in rows if not inserted]
        if replaced:
            cur.execute(ingest.DELETE_CHUNKS_SQL, (collection.collection_id, replaced))
        cur.execute(ingest.CREATE_STAGING_SQL)
        with cur.copy(ingest.COPY_STAGING_SQL) as copy:
            copy.set_types(ingest.STAGING_TYPES)
            for row in ingest.staging_rows(prepared, document_ids, embeddings):
                copy.write_row(row)
        params = (collection.collection_id, tenant, collection.analyzer)
        cur.execute(ingest.INSERT_CHUNKS_SQL, params)
    return len(rows) - len(replaced), len(replaced)


@dataclass
class _Batch:
    """A batch between its plan and its write (see :class:`_Ingest`)."""

    size: int
    prepared: list[PreparedDocument]
    unchanged: int
    #: one text hash per chunk, in write order, and the vectors known so far by hash
    hashes: list[bytes] = field(default_factory=list)
    vectors: dict[bytes, npt.NDArray[np.float32]] = field(default_factory=dict)
    #: the texts the worker thread embeds for this batch, and their vectors to come
    missing: list[tuple[bytes, str]] = field(default_factory=list)
    embedding: Future[npt.NDArray[np.float32]] | None = None
    #: the vectors of the batch before, for texts that it embeds too (not twice)
    lender: dict[bytes, npt.NDArray[np.float32]] = field(default_factory=dict)

    def writes(self, ids: Iterable[str]) -> bool:
        """Whether this batch writes a document of one of ``ids``."""
        mine = {p.document.id for p in self.prepared}
        return not mine.isdisjoint(ids)


class _Ingest:
    """One :func:`ingest_documents` call: while batch n is written, batch n+1 is embedded.

    Only the model runs in the worker thread; every statement runs on the caller's thread
    (or event loop), one at a time, as a connection requires. :meth:`plan` reads a batch's
    hashes and cached vectors and hands the texts it misses to the worker, then
    :meth:`finish` writes the batch planned before it while the worker embeds.
    """

    def __init__(
        self,
        conn: Connection,
        collection: Collection,
        embedder: Embedder,
        tenant: str,
        on_progress: Callable[[int], None] | None,
    ) -> None:
        self.conn = conn
        self.collection = collection
        self.embedder = embedder
        self.tenant = tenant
        self.on_progress = on_progress
        self.key = cache.model_key(embedder, collection.settings.document_prompt)
        self.action = f"ingest into {collection.name!r}"
        self.unread = UnreadScripts(collection.embedding_model, collection.name)
        self.report = IngestReport()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hybridsearch-embed")
        #: planned, its embedding submitted, not written yet
        self.pending: _Batch | None = None

    def plan(self, size: int, latest: Mapping[str, Document]) -> None:
        """Plan a batch and submit its embedding, then finish the one before it."""
        collection = self.collection
        try:
            stored = _stored_hashes(self.conn, collection, list(latest), self.tenant)
            planned = ingest.plan_batch(latest, stored, collection)
            batch = _Batch(size, *planned)
            if batch.prepared:
                self.unread.add([p.document.text for p in batch.prepared])
                texts = [text for p in batch.prepared for text in p.chunks]
                batch.hashes, batch.vectors = _cached(self.conn, self.key, texts)
                missing = cache.missing_texts(batch.hashes, texts, batch.vectors)
                if self.pending is not None:  # it caches what it embeds only when written
                    lent = {h for h, _ in self.pending.missing}
                    missing = [m for m in missing if m[0] not in lent]
                    batch.lender = self.pending.vectors
                batch.missing = missing
                if missing:
                    wanted = [t for _, t in missing]
                    batch.embedding = self.pool.submit(self.embedder.embed_documents, wanted)
        except psycopg.Error as exc:
            raise from_database_error(exc, self.action) from exc
        self.finish()
        self.pending = batch

    def finish(self) -> None:
        """Write the pending batch, if any, in one transaction once its vectors are in."""
        batch, self.pending = self.pending, None
        if batch is None:
            return
        report = self.report
        if batch.prepared:
            try:
                if batch.embedding is not None:
                    fresh = batch.embedding.result()
                    _keep_fresh(
                        self.conn, self.embedder, self.key, batch.missing, fresh, batch.vectors
                    )
                known = batch.vectors
                vectors = [known[h] if h in known else batch.lender[h] for h in batch.hashes]
                added, updated = _write(
                    self.conn, self.collection, batch.prepared, np.stack(vectors), self.tenant
                )
            except psycopg.Error as exc:
                raise from_database_error(exc, self.action) from exc
            report.added += added
            report.updated += updated
            report.chunks += len(batch.hashes)
            report.embedded += len(batch.missing)
        report.unchanged += batch.unchanged
        if self.on_progress is not None:
            self.on_progress(batch.size)


def ingest_documents(
    conn: Connection,
    collection: Collection,
    embedder: Embedder,
    documents: Iterable[Document],
    *,
    batch_size: int = 64,
    max_document_chars: int = 2_000_000,
    on_progress: Callable[[int], None] | None = None,
    tenant: str = "",
) -> IngestReport:
    """Add or replace documents, one transaction per batch; unchanged ones (same content
    hash) are skipped without embedding. ``tenant`` owns them (see hybridsearch.tenancy).

    Batch n+1 is embedded in a worker thread while batch n is written, in both doors, and
    the result is that of one batch after the other: a batch reads the stored hashes of
    documents that the batch before it writes only after that write; a failure leaves
    every batch before the failing one stored and nothing of it; the worker is done when
    this returns or raises.
    """
    ingest.check_dimensions(embedder, collection)
    run = _Ingest(conn, collection, embedder, tenant, on_progress)
    try:
        for batch in ingest.batches(documents, batch_size):
            latest = ingest.latest_by_id(batch, max_document_chars)
            if run.pending is not None and run.pending.writes(latest):
                run.finish()  # the hashes this batch reads are written first
            run.plan(len(batch), latest)
        run.finish()
    except Exception:
        # Reading or planning batch n+1 failed: store batch n first, as one batch after
        # the other would have. (A failure of batch n's own write has taken it already.)
        run.finish()
        raise
    finally:
        run.pool.shutdown(cancel_futures=True)
    warning = run.unread.warning()
    if warning is not None:
        run.report.warnings.append(warning)
    return run.report


def ingest_embedded(
    conn: Connection,
    collection: Collection,
    prepared: Sequence[PreparedDocument],
    embeddings: np.ndarray,
    *,
    tenant: str = "",
) -> IngestReport:
    """Write documents whose chunks the caller has already embedded, in one transaction.

    The write of :func:`ingest_documents` (upsert, COPY BINARY into staging, INSERT with
    the analyzer) for bulk loads and benchmarks that bring their own vectors; nothing is
    chunked, embedded or skipped by hash here. ``embeddings`` has one row per chunk, in
    document then chunk order.
    """
    total = sum(len(p.chunks) for p in prepared)
    if embeddings.shape != (total, collection.dimensions):
        raise EmbeddingError(
            f"expected embeddings of shape ({total}, {collection.dimensions}) for "
            f"{total} chunks in {collection.name!r}, got {embeddings.shape}"
        )
    try:
        added, updated = _write(conn, collection, prepared, embeddings, tenant)
    except psycopg.Error as exc:
        raise from_database_error(exc, f"ingest into {collection.name!r}") from exc
    return IngestReport(added=added, updated=updated, chunks=total)


def delete_documents(
    conn: Connection, collection: Collection, ids: Sequence[str], tenant: str = ""
) -> int:
    """Delete a tenant's documents (and their chunks) by external id; how many existed."""
    params = (collection.collection_id, tenant, list(ids))
    try:
        with conn.transaction():
            set_tenant(conn, tenant)
            cur = conn.execute(ingest.DELETE_DOCUMENTS_SQL, params)
    except psycopg.Error as exc:
        raise from_database_error(exc, f"delete from {collection.name!r}") from exc
    return cur.rowcount


# -- bulk loads --------------------------------------------------------------------------


def rebuild_indexes(
    conn: Connection,
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
                params = ("maintenance_work_mem", maintenance_work_mem)
                conn.execute(bulk.SET_LOCAL_SQL, params)
            if parallel_workers is not None:
                params = ("max_parallel_maintenance_workers", str(parallel_workers))
                conn.execute(bulk.SET_LOCAL_SQL, params)
            cur = conn.execute(bulk.CREATE_INDEXES_SQL, (collection.name,))
            row = cur.fetchone()
            conn.execute(bulk.analyze_sql(collection))
    except psycopg.Error as exc:
        raise from_database_error(exc, f"build the indexes of {collection.name!r}") from exc
    return int(row[0]) if row else 0


@contextmanager
def deferred_indexes(
    conn: Connection,
    collection: Collection,
    *,
    maintenance_work_mem: str | None = None,
    parallel_workers: int | None = None,
) -> Iterator[None]:
    """Run the body (a bulk load on ``conn``) with the collection's search indexes dropped,
    and rebuild them once at the end, even when the body fails (see hybridsearch.bulk)."""
    try:
        with conn.transaction():
            conn.execute(bulk.DROP_INDEXES_SQL, (collection.name,))
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


# -- search ------------------------------------------------------------------------------


def fetch_candidates(
    conn: Connection,
    collection: Collection,
    options: SearchOptions,
    embedding: np.ndarray | None,
    *,
    statement_timeout_ms: int,
) -> list[Hit]:
    """The fused TopK from ``hybridsearch.search_hybrid``, under a statement timeout.

    Raises CollectionChangedError when the collection switched embedding model (a
    re-embed) before the search ran: its candidates, or its error, came from vectors the
    query was not embedded for. The check follows the search in its transaction, so a
    switch that committed before the search read anything is seen."""
    params = search.candidate_params(collection, options, embedding)
    query = reembed.CURRENT_MODEL_SQL
    try:
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(search.SET_STATEMENT_TIMEOUT_SQL, (str(statement_timeout_ms),))
            set_tenant(conn, options.tenant)
            cur.execute(search.SEARCH_HYBRID_SQL, params)
            rows = cur.fetchall()
            cur.execute(query, (collection.collection_id,))
            current = cur.fetchone()
    except psycopg.Error as exc:
        if embedding is not None:
            row = _fetch_one(conn, query, (collection.collection_id,), "search")
            if row is not None and row["embedding_model"] != collection.embedding_model:
                raise reembed.changed_error(collection, row["embedding_model"], "search") from exc
        raise from_database_error(exc, f"search in {collection.name!r}") from exc
    model = current["embedding_model"] if current else None
    if embedding is not None and model != collection.embedding_model:
        raise reembed.changed_error(collection, model, "search")
    return [search.hit_from_row(row) for row in rows]


def add_snippets(
    conn: Connection, collection: Collection, query: str, hits: list[Hit]
) -> list[Hit]:
    """The hits with ``hybridsearch.highlight`` snippets (matches in ``<mark>``)."""
    if not hits:
        return hits
    params = search.highlight_params(collection, query, hits)
    try:
        cur = conn.execute(search.HIGHLIGHT_SQL, params)
        rows = cur.fetchall()
    except psycopg.Error as exc:
        raise from_database_error(exc, f"highlighting results in {collection.name!r}") from exc
    return search.with_snippets(hits, rows)
