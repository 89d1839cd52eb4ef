"""The Python service API: one object that owns the pool, the models and the settings.

One implementation, two doors: :class:`AsyncHybridSearch` in ``hybridsearch/aio.py`` is
the source, and :class:`HybridSearch` in ``hybridsearch/client.py`` is generated from it
by ``tools/async_to_sync.py`` (awaits dropped, ``asyncio.to_thread(f, x)`` turned into
``f(x)``, the async pool and connections into sync ones). Both run the same steps in the
same order and raise the same errors, a saturated pool included.

A search checks a pooled connection out only for its SQL: the query is embedded and the
candidates reranked with no connection held (see :mod:`hybridsearch.search`). Model
inference and chunking run in worker threads in the async client, so the event loop
keeps serving.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from types import TracebackType
from typing import Any

import numpy as np

from hybridsearch import calibration
from hybridsearch.collections import (
    Calibration,
    Collection,
    CollectionSettings,
    CollectionStats,
    Distance,
    EfSearchStep,
    validate_name,
)
from hybridsearch.config import Settings
from hybridsearch.db import connection_async, migrate, reembed_async, store_async
from hybridsearch.db.connection_async import AsyncPool, checkout
from hybridsearch.errors import (
    CollectionChangedError,
    HybridSearchError,
    SchemaNotInstalledError,
)
from hybridsearch.ingest import Document, IngestReport, check_dimensions
from hybridsearch.models.configured import configured_embedder, configured_reranker
from hybridsearch.models.embedder import Embedder
from hybridsearch.models.picker import choose_model, with_choice
from hybridsearch.models.reranker import Reranker
from hybridsearch.params import (
    HNSW_CALIBRATION_QUERIES,
    HNSW_TARGET_RECALL,
    ONE_PER_DOCUMENT,
    TOP_K,
    TOP_N,
)
from hybridsearch.reembed import ATTEMPTS_AFTER_SWITCH, ReembedReport, stored_model_name
from hybridsearch.search import (
    SearchResult,
    StageTimer,
    load_models,
    models_to_load,
    rerank_candidates,
    search_result,
)
from hybridsearch.search_input import Mode, SearchOptions, check_embedding, validate_options
from hybridsearch.sync import manage_async, worker_async
from hybridsearch.sync.status import SyncStatus
from hybridsearch.sync.worker_async import RoundReport


def _prepare(settings: Settings, migrate_schema: bool | None) -> str:
    """The database URL, with the schema installed or upgraded where that is asked for
    (by default for the embedded server only): an external database must be migrated
    with ``hybridsearch db upgrade`` first."""
    url = connection_async.database_url(settings)
    embedded = settings.database_url is None
    if migrate_schema if migrate_schema is not None else embedded:
        migrate.upgrade(url)
    elif migrate.current_revision(url) is None:
        raise SchemaNotInstalledError(
            "the hybridsearch schema is not installed in this database; "
            "run `hybridsearch db upgrade` first"
        )
    return url


class AsyncHybridSearch:
    """Hybrid search over one PostgreSQL database.

    It opens the database named by the settings (the embedded server by default) and, for
    the embedded server, installs or upgrades the schema. Use it as a context manager: the
    end of the block closes its connection pool.
    """

    settings: Settings
    url: str
    reranker: Reranker | None
    _pool: AsyncPool
    _embedders: dict[tuple[str, str | None, str | None], Embedder]

    if True:  # ASYNC

        def __init__(
            self, settings: Settings, url: str, pool: AsyncPool, reranker: Reranker | None
        ) -> None:
            """Use :meth:`open`, which connects, rather than this."""
            self.settings = settings
            self.url = url
            self.reranker = reranker
            self._pool = pool
            self._embedders = {}

        @classmethod
        async def open(
            cls,
            settings: Settings | None = None,
            *,
            reranker: Reranker | str | None = None,
            migrate_schema: bool | None = None,
        ) -> AsyncHybridSearch:
            """Connect: ``async with await AsyncHybridSearch.open(settings) as hs:``."""
            settings = settings or Settings.from_env()
            reranker = reranker if reranker is not None else settings.reranker_model
            if isinstance(reranker, str):
                reranker = configured_reranker(reranker, settings)
            url = await asyncio.to_thread(_prepare, settings, migrate_schema)
            pool = await connection_async.open_pool(
                url, max_size=settings.pool_size, timeout_s=settings.pool_timeout_ms / 1000
            )
            return cls(settings, url, pool, reranker)

    else:

        def __init__(
            self,
            settings: Settings | None = None,
            *,
            reranker: Reranker | str | None = None,
            migrate_schema: bool | None = None,
        ) -> None:
            self.settings = settings = settings or Settings.from_env()
            reranker = reranker if reranker is not None else settings.reranker_model
            if isinstance(reranker, str):
                reranker = configured_reranker(reranker, settings)
            self.reranker = reranker
            self.url = _prepare(settings, migrate_schema)
            self._pool = connection_async.open_pool(
                self.url, max_size=settings.pool_size, timeout_s=settings.pool_timeout_ms / 1000
            )
            self._embedders = {}

    async def close(self) -> None:
        await self._pool.close()

    async def __aenter__(self) -> AsyncHybridSearch:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def embedder(self, collection: Collection) -> Embedder:
        """The (shared) query/document embedder for a collection's model and prompts."""
        s = collection.settings
        key = (collection.embedding_model, s.query_prompt, s.document_prompt)
        if key not in self._embedders:
            self._embedders[key] = configured_embedder(
                collection.embedding_model,
                self.settings,
                query_prompt=s.query_prompt,
                document_prompt=s.document_prompt,
            )
        return self._embedders[key]

    # -- collections ---------------------------------------------------------------------

    async def create_collection(
        self,
        name: str,
        *,
        model: str | None = None,
        sample_texts: Iterable[str] | None = None,
        distance: Distance = "cosine",
        analyzer: str = "mixed",
        settings: CollectionSettings | None = None,
        bm25_k1: float = 1.2,
        bm25_b: float = 0.75,
    ) -> Collection:
        """Create a collection; its dimension is read from the embedding model.

        Without ``model`` (and without ``HYBRIDSEARCH_EMBEDDING_MODEL``) the model is
        picked from ``sample_texts``, the text the collection is for (say its first
        documents): a Chinese model for CJK text, all-MiniLM-L6-v2 otherwise (see
        :mod:`hybridsearch.models.picker`). The choice and its reason are stored in the
        settings as ``model_choice``; a picked model's prompts fill those not given.
        """
        validate_name(name)
        choice = choose_model(model, self.settings, sample_texts)
        settings = with_choice(settings or CollectionSettings(), choice).checked()
        model = choice.model
        probe = configured_embedder(
            model,
            self.settings,
            query_prompt=settings.query_prompt,
            document_prompt=settings.document_prompt,
        )
        await asyncio.to_thread(probe.load)
        async with checkout(self._pool) as conn:
            return await store_async.create_collection(
                conn,
                name,
                embedding_model=model,
                dimensions=probe.dimensions,
                distance=distance,
                analyzer=analyzer,
                settings=settings,
                bm25_k1=bm25_k1,
                bm25_b=bm25_b,
            )

    async def get_collection(self, name: str) -> Collection:
        async with checkout(self._pool) as conn:
            return await store_async.get_collection(conn, name)

    async def list_collections(self) -> list[CollectionStats]:
        async with checkout(self._pool) as conn:
            return await store_async.list_collections(conn)

    async def update_collection_settings(self, name: str, **changes: Any) -> Collection:
        """Change a collection's defaults, e.g. ``fusion="weighted", vector_weight=0.7``.

        Chunking and prompt changes apply to documents added afterwards (changed
        documents are re-chunked on their next ingest).
        """
        current = await self.get_collection(name)
        updated = replace(current.settings, **changes).checked()
        async with checkout(self._pool) as conn:
            return await store_async.update_settings(conn, name, updated)

    async def rebuild_vector_index(
        self, name: str, *, m: int | None = None, ef_construction: int | None = None
    ) -> Collection:
        """Build the collection's HNSW index again, with new build parameters where given
        (stored in its settings first), and calibrate the ef_search its searches walk
        with (``hybridsearch.calibrate_ef_search``). Writes wait for the build, and
        searches of the collection wait for it to commit."""
        changes = {
            key: value
            for key, value in (("hnsw_m", m), ("hnsw_ef_construction", ef_construction))
            if value is not None
        }
        if changes:
            await self.update_collection_settings(name, **changes)
        async with checkout(self._pool) as conn:
            await store_async.rebuild_vector_index(conn, name)
        return await self.get_collection(name)

    async def calibrate_vector_index(
        self,
        name: str,
        *,
        target_recall: float = HNSW_TARGET_RECALL.default,
        queries: int = HNSW_CALIBRATION_QUERIES.default,
    ) -> list[EfSearchStep]:
        """Measure the recall@10 of the collection's HNSW index against exact search at
        increasing ef_search, with ``queries`` of its chunks as queries, and keep the
        smallest that reaches ``target_recall`` for its searches; every value tried, the
        kept one last. Index builds do this by themselves; run it again after the
        collection has grown a lot."""
        target_recall = HNSW_TARGET_RECALL.check(target_recall)
        queries = HNSW_CALIBRATION_QUERIES.check(queries)
        async with checkout(self._pool) as conn:
            return await store_async.calibrate_ef_search(conn, name, target_recall, queries)

    async def reembed_collection(
        self, name: str, model: str, *, on_progress: Callable[[int], None] | None = None
    ) -> ReembedReport:
        """Switch collection ``name`` to embedding model ``model`` (a name or a folder,
        e.g. one ``hybridsearch train embedder`` wrote; other dimensions are fine).

        Its chunks are embedded again into a new table with its own search indexes while
        searches and writes go on with the old model; then one transaction swaps the
        tables and records the new model, and searches that embedded with the old one run
        again. Documents added or deleted meanwhile are carried over. The HNSW ef_search
        and the fusion weights are then calibrated for the new vectors. An interrupted
        re-embed leaves the collection on its old model; calling this again with the
        same model resumes it (:meth:`cancel_reembed` drops what it left instead).
        ``on_progress`` gets the chunks of each batch written.
        """
        target = await self.get_collection(name)
        embedder = configured_embedder(
            stored_model_name(model),
            self.settings,
            query_prompt=target.settings.query_prompt,
            document_prompt=target.settings.document_prompt,
        )
        await asyncio.to_thread(embedder.load)  # a model that cannot load changes nothing
        async with checkout(self._pool) as conn:
            report = await reembed_async.reembed_collection(
                conn, target, embedder, on_progress=on_progress
            )
            await store_async.calibrate_ef_search(
                conn, name, HNSW_TARGET_RECALL.default, HNSW_CALIBRATION_QUERIES.default
            )
        await self.calibrate(name, force=True)
        report.collection = await self.get_collection(name)
        return report

    async def cancel_reembed(self, name: str) -> bool:
        """Drop what an interrupted :meth:`reembed_collection` of ``name`` left (its
        half-built table); False when there was nothing."""
        async with checkout(self._pool) as conn:
            return await reembed_async.cancel_reembed(conn, name)

    async def drop_collection(self, name: str) -> bool:
        async with checkout(self._pool) as conn:
            return await store_async.drop_collection(conn, name)

    async def calibrate(self, name: str, *, force: bool = True) -> Calibration | None:
        """Measure how well each leg reads the collection's text and store the fusion
        weights that follow (see :mod:`hybridsearch.calibration`); they apply where the
        collection's settings leave a weight unset. ``force=False`` measures only when
        the collection is due (its first sizeable ingest, or twice the chunks since).
        None when there was nothing to measure: too few chunks, or not due."""
        target = await self.get_collection(name)
        async with checkout(self._pool) as conn:
            # the count first: most ingests are not due, and the sample reads every chunk
            chunks = await store_async.chunk_count(conn, target)
            if not (force or calibration.should_calibrate(target, chunks)):
                return None
            pairs, first_terms, second_terms = await store_async.calibration_sample(conn, target)
        if len(pairs) < calibration.MIN_SAMPLE:
            return None
        embedder = self.embedder(target)
        firsts = await asyncio.to_thread(embedder.embed_queries, [a for a, _ in pairs])
        seconds = await asyncio.to_thread(embedder.embed_documents, [b for _, b in pairs])
        result = calibration.calibration(
            calibration.cosine_matrix(firsts, seconds),
            calibration.bm25_matrix(first_terms, second_terms, k1=target.bm25_k1, b=target.bm25_b),
            chunks,
        )
        async with checkout(self._pool) as conn:
            await store_async.save_calibration(conn, target, result)
        return result

    # -- documents -----------------------------------------------------------------------

    async def add_documents(
        self,
        collection: str,
        documents: Iterable[Document],
        *,
        batch_size: int = 64,
        on_progress: Callable[[int], None] | None = None,
        tenant: str = "",
        bulk: bool = False,
    ) -> IngestReport:
        """Add or replace documents; one transaction per batch, unchanged ones skipped.

        ``tenant`` owns the documents when one collection serves many tenants. ``bulk``
        drops the collection's search indexes for the load and builds them once at the
        end (see :mod:`hybridsearch.bulk`): much faster for a load that is large next to
        what the collection holds; searches of it fall back to exact scans meanwhile.
        """
        # only a list can be read again (an iterator is read once, as it streams)
        attempts = ATTEMPTS_AFTER_SWITCH if isinstance(documents, Sequence) else 1
        for attempt in range(1, attempts + 1):
            target = await self.get_collection(collection)
            embedder = self.embedder(target)
            # A model that cannot load must fail before the indexes are dropped, not after.
            await asyncio.to_thread(check_dimensions, embedder, target)
            try:
                async with (
                    checkout(self._pool) as conn,
                    store_async.deferred_indexes(conn, target) if bulk else nullcontext(),
                ):
                    report = await store_async.ingest_documents(
                        conn,
                        target,
                        embedder,
                        documents,
                        batch_size=batch_size,
                        max_document_chars=self.settings.max_document_chars,
                        on_progress=on_progress,
                        tenant=tenant,
                    )
                break
            except CollectionChangedError:
                # a re-embed switched models mid-ingest: the batches written before the
                # switch were carried over by it and are skipped as unchanged now
                if attempt == attempts:
                    raise
        try:
            report.calibration = await self.calibrate(collection, force=False)
        except HybridSearchError as exc:  # the documents are stored: say so, not fail
            report.warnings.append(f"the fusion weights were not calibrated: {exc}")
        return report

    async def delete_documents(
        self, collection: str, ids: Sequence[str], *, tenant: str = ""
    ) -> int:
        """Delete a tenant's documents (and their chunks) by id; how many existed."""
        target = await self.get_collection(collection)
        async with checkout(self._pool) as conn:
            return await store_async.delete_documents(conn, target, ids, tenant)

    # -- synced tables (hybridsearch.sync) -----------------------------------------------

    async def sync_table(
        self,
        collection: str,
        table: str,
        *,
        id_column: str,
        text_columns: Sequence[str],
        metadata_columns: Sequence[str] = (),
        tenant_column: str | None = None,
    ) -> int:
        """Keep ``collection`` in step with an application's ``table`` (``schema.table``).

        From now on the table's INSERT, UPDATE and DELETE statements queue the rows they
        change, in their own transaction, and :meth:`sync_run` writes them: each row is
        the document ``str(id)``, its text the text columns joined, its metadata the
        metadata columns, its tenant the tenant column's value. The rows already there
        are queued now, in batches that each commit. Returns how many were queued.
        """
        columns = manage_async.checked_columns(text_columns, metadata_columns)
        async with checkout(self._pool) as conn:
            return await manage_async.sync_table(
                conn, collection, table, id_column=id_column, tenant_column=tenant_column,
                text_columns=columns[0], metadata_columns=columns[1],
            )  # fmt: skip

    async def unsync_table(self, collection: str, table: str) -> bool:
        """Stop syncing ``table``: its triggers, queue and failures go, the collection's
        documents stay. False when it was not synced into ``collection``."""
        async with checkout(self._pool) as conn:
            return await manage_async.unsync_table(conn, collection, table)

    async def sync_status(self) -> list[SyncStatus]:
        """Every synced table: collection, columns, queued rows, lag, failed rows."""
        async with checkout(self._pool) as conn:
            return await manage_async.status(conn)

    async def sync_retry(self, collection: str | None = None, table: str | None = None) -> int:
        """Queue the rows that failed again (all, a collection's, or one table's)."""
        async with checkout(self._pool) as conn:
            return await manage_async.retry(conn, collection, table)

    async def sync_run(
        self,
        *,
        once: bool = True,
        batch_size: int = worker_async.BATCH,
        poll_interval_s: float = worker_async.POLL_INTERVAL_S,
        stop: threading.Event | None = None,
        on_round: Callable[[RoundReport], None] | None = None,
    ) -> RoundReport:
        """Write the queued rows of every synced table into their collections.

        ``once``: until the queue is drained. Otherwise go on waiting for changes
        (notified by the triggers, or every ``poll_interval_s``) until ``stop`` is set.
        The worker has connections of its own, not the pool's. Calibrates each
        collection it wrote when it is due, as :meth:`add_documents` does.
        """
        manage_async.check_batch_size(batch_size)
        total = RoundReport()
        conn = await worker_async.connect(self.url)
        cache = await worker_async.connect(self.url, listen=False)
        try:
            async for done in worker_async.rounds(
                conn,
                self.embedder,
                once=once,
                batch_size=batch_size,
                max_document_chars=self.settings.max_document_chars,
                poll_interval_s=poll_interval_s,
                stop=stop,
                cache=cache,
            ):
                total.add(done)
                if on_round is not None:
                    on_round(done)
                for name in sorted(done.collections):
                    try:
                        await self.calibrate(name, force=False)
                    except HybridSearchError as exc:  # the documents are stored: say so
                        note = f"{name}: the fusion weights were not calibrated: {exc}"
                        total.warnings.append(note)
        finally:
            await conn.close()
            await cache.close()
        return total

    # -- search --------------------------------------------------------------------------

    async def search(
        self,
        collection: str,
        query: str,
        *,
        top_k: int = TOP_K.default,
        top_n: int = TOP_N.default,
        filter: dict[str, Any] | str | None = None,
        mode: Mode = "hybrid",
        rerank: bool = True,
        fusion: str | None = None,
        rrf_k: int | None = None,
        vector_weight: float | None = None,
        keyword_weight: float | None = None,
        query_embedding: np.ndarray | None = None,
        tenant: str | None = None,
        rerank_depth: int | None = None,
        one_per_document: bool = ONE_PER_DOCUMENT,
    ) -> SearchResult:
        """TopN for ``query`` with every stage's ranks, scores, snippets and timings.

        ``query_embedding`` skips embedding the query (it must match the collection).
        ``tenant`` restricts the search to one tenant's documents. ``rerank_depth``: how
        many of the fused TopK the reranker scores (None: all); the rest follow them in
        fused order, and ``top_n`` may exceed it (:data:`hybridsearch.params.RERANK_DEPTH`).
        ``one_per_document``: TopN keeps each document's best chunk only
        (:data:`hybridsearch.params.ONE_PER_DOCUMENT`); the candidates are all kept.
        """
        timer = StageTimer()
        # A re-embed that switches the collection's model between the query's embedding
        # and its SQL makes the search run again with the new model.
        for attempt in range(1, ATTEMPTS_AFTER_SWITCH + 1):
            target = await self.get_collection(collection)
            options = validate_options(
                target,
                query,
                top_k=top_k,
                top_n=top_n,
                mode=mode,
                filter=filter,
                fusion=fusion,
                rrf_k=rrf_k,
                vector_weight=vector_weight,
                keyword_weight=keyword_weight,
                max_query_chars=self.settings.max_query_chars,
                tenant=tenant,
                rerank_depth=rerank_depth,
                one_per_document=one_per_document,
            )
            embedder = self.embedder(target)
            pending = models_to_load(options, embedder, query_embedding, self.reranker, rerank)
            if pending:
                with timer.stage("load"):
                    await asyncio.to_thread(load_models, pending)
            embedding = await self._embed_query(target, embedder, options, query_embedding, timer)
            try:
                async with checkout(self._pool) as conn:
                    with timer.stage("candidates"):
                        candidates = await store_async.fetch_candidates(
                            conn,
                            target,
                            options,
                            embedding,
                            statement_timeout_ms=self.settings.statement_timeout_ms,
                        )
                break
            except CollectionChangedError:
                if attempt == ATTEMPTS_AFTER_SWITCH:
                    raise
        with timer.stage("rerank"):
            top, depth, note = await asyncio.to_thread(
                rerank_candidates,
                candidates,
                options,
                self.reranker,
                rerank,
                self.settings.rerank_timeout_s,
            )
        if top:
            async with checkout(self._pool) as conn:
                top = await store_async.add_snippets(conn, target, options.query, top)
        return search_result(options, candidates, top, depth, note, timer)

    async def _embed_query(
        self,
        target: Collection,
        embedder: Embedder,
        options: SearchOptions,
        query_embedding: np.ndarray | None,
        timer: StageTimer,
    ) -> np.ndarray | None:
        """The query's vector (None for a keyword search), timed as "embed"."""
        with timer.stage("embed"):
            if options.mode == "keyword":
                return None
            if query_embedding is None:
                query_embedding = await asyncio.to_thread(embedder.embed_query, options.query)
            return check_embedding(query_embedding, target)
