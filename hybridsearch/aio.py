"""The asyncio service API: :class:`AsyncHybridSearch`, the twin of :class:`HybridSearch`.

The database is reached with psycopg's async pool; model inference (embedding, chunking,
reranking) runs in worker threads so the event loop keeps serving. Validation, SQL and
row → result mapping are the sync modules' own (``collections``, ``ingest``, ``search``,
``embedding_cache``, ``tenancy``), awaited here and in :mod:`hybridsearch.db.aio`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from types import TracebackType
from typing import Any

import numpy as np
import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from hybridsearch import collections as collections_db
from hybridsearch import ingest
from hybridsearch import search as search_db
from hybridsearch.collections import Collection, CollectionSettings, CollectionStats, Distance
from hybridsearch.config import Settings
from hybridsearch.db import aio as db
from hybridsearch.db import migrate
from hybridsearch.db.connection import database_url
from hybridsearch.errors import SchemaNotInstalledError, from_database_error
from hybridsearch.ingest import Document, IngestReport
from hybridsearch.models.configured import configured_embedder, configured_reranker
from hybridsearch.models.embedder import Embedder
from hybridsearch.models.reranker import Reranker
from hybridsearch.search import SearchResult
from hybridsearch.search_input import Mode, check_embedding, validate_options


class AsyncHybridSearch:
    """Hybrid search over one PostgreSQL database, for asyncio applications.

    Open it with ``async with await AsyncHybridSearch.open(settings) as hs:``; every method
    of :class:`HybridSearch` is here as a coroutine with the same arguments and results.
    """

    def __init__(
        self,
        settings: Settings,
        url: str,
        pool: AsyncConnectionPool[db.AsyncConnection],
        reranker: Reranker | None,
    ) -> None:
        self.settings = settings
        self.url = url
        self.reranker = reranker
        self._pool = pool
        self._embedders: dict[tuple[str, str | None, str | None], Embedder] = {}

    @classmethod
    async def open(
        cls,
        settings: Settings | None = None,
        *,
        reranker: Reranker | str | None = None,
        migrate_schema: bool | None = None,
    ) -> AsyncHybridSearch:
        """Connect as :class:`HybridSearch` does (the embedded server is migrated)."""
        settings = settings or Settings.from_env()
        url = await asyncio.to_thread(database_url, settings)
        embedded = settings.database_url is None
        if migrate_schema if migrate_schema is not None else embedded:
            await asyncio.to_thread(migrate.upgrade, url)
        elif await asyncio.to_thread(migrate.current_revision, url) is None:
            raise SchemaNotInstalledError(
                "the hybridsearch schema is not installed in this database; "
                "run `hybridsearch db upgrade` first"
            )
        reranker = reranker if reranker is not None else settings.reranker_model
        if isinstance(reranker, str):
            reranker = configured_reranker(reranker, settings)
        return cls(settings, url, await db.open_async_pool(url), reranker)

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
        distance: Distance = "cosine",
        analyzer: str = "mixed",
        settings: CollectionSettings | None = None,
        bm25_k1: float = 1.2,
        bm25_b: float = 0.75,
    ) -> Collection:
        """Create a collection; its dimension is read from the embedding model."""
        collections_db.validate_name(name)
        settings = settings or CollectionSettings()
        probe = configured_embedder(
            model or self.settings.embedding_model,
            self.settings,
            query_prompt=settings.query_prompt,
            document_prompt=settings.document_prompt,
        )
        dimensions = await asyncio.to_thread(lambda: probe.dimensions)
        arguments = collections_db.create_arguments(
            name,
            embedding_model=probe.model_id,
            dimensions=dimensions,
            distance=distance,
            analyzer=analyzer,
            settings=settings,
            bm25_k1=bm25_k1,
            bm25_b=bm25_b,
        )
        async with self._pool.connection() as conn:
            try:
                async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                    await cur.execute(collections_db.CREATE_COLLECTION_SQL, arguments)
                    row = await cur.fetchone()
            except psycopg.errors.UniqueViolation:
                raise collections_db.exists_error(name) from None
            except psycopg.Error as exc:
                raise from_database_error(exc, f"creating collection {name!r}") from exc
        assert row is not None
        return collections_db.collection_from_row(row)

    async def get_collection(self, name: str) -> Collection:
        collections_db.check_lookup_name(name)
        row = await self._fetch_one(collections_db.GET_COLLECTION_SQL, (name,))
        if row is None:
            raise collections_db.not_found_error(name)
        return collections_db.collection_from_row(row)

    async def list_collections(self) -> list[CollectionStats]:
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(collections_db.LIST_COLLECTIONS_SQL)
            return [collections_db.stats_from_row(r) for r in await cur.fetchall()]

    async def update_collection_settings(self, name: str, **changes: Any) -> Collection:
        """Change a collection's defaults, e.g. ``fusion="weighted", vector_weight=0.7``."""
        updated = replace((await self.get_collection(name)).settings, **changes)
        params = (psycopg.types.json.Jsonb(updated.to_json()), name)
        row = await self._fetch_one(collections_db.UPDATE_SETTINGS_SQL, params)
        if row is None:
            raise collections_db.not_found_error(name)
        return collections_db.collection_from_row(row)

    async def drop_collection(self, name: str) -> bool:
        collections_db.check_lookup_name(name)
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(collections_db.DROP_COLLECTION_SQL, (name,))
            row = await cur.fetchone()
        assert row is not None
        return bool(row[0])

    async def _fetch_one(self, sql: str, params: Sequence[Any]) -> dict[str, Any] | None:
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql, params)
            return await cur.fetchone()

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

        ``bulk`` defers the collection's search indexes to the end of the load, as in
        :meth:`hybridsearch.HybridSearch.add_documents`.
        """
        target = await self.get_collection(collection)
        embedder = self.embedder(target)
        await asyncio.to_thread(ingest.check_dimensions, embedder, target)
        report = IngestReport()
        action = f"ingest into {target.name!r}"
        async with (
            self._pool.connection() as conn,
            db.deferred_indexes(conn, target) if bulk else nullcontext(),
        ):
            for batch in ingest.batches(documents, batch_size):
                latest = ingest.latest_by_id(batch, self.settings.max_document_chars)
                try:
                    stored = await db.stored_hashes(conn, target, list(latest), tenant)
                except psycopg.Error as exc:
                    raise from_database_error(exc, action) from exc
                prepared, unchanged = await asyncio.to_thread(
                    ingest.plan_batch, latest, stored, target
                )
                report.unchanged += unchanged
                if prepared:
                    texts = [text for p in prepared for text in p.chunks]
                    try:
                        embeddings, computed = await db.embed_with_cache(
                            conn, embedder, texts, document_prompt=target.settings.document_prompt
                        )
                        added, updated = await db.write_documents(
                            conn, target, prepared, embeddings, tenant
                        )
                    except psycopg.Error as exc:
                        raise from_database_error(exc, action) from exc
                    report.added += added
                    report.updated += updated
                    report.chunks += len(texts)
                    report.embedded += computed
                if on_progress is not None:
                    on_progress(len(batch))
        return report

    async def delete_documents(
        self, collection: str, ids: Sequence[str], *, tenant: str = ""
    ) -> int:
        """Delete a tenant's documents (and their chunks) by id; how many existed."""
        target = await self.get_collection(collection)
        async with self._pool.connection() as conn:
            return await db.delete_documents(conn, target, ids, tenant)

    # -- search --------------------------------------------------------------------------

    async def search(
        self,
        collection: str,
        query: str,
        *,
        top_k: int = 50,
        top_n: int = 5,
        filter: dict[str, Any] | str | None = None,
        mode: Mode = "hybrid",
        rerank: bool = True,
        fusion: str | None = None,
        rrf_k: int | None = None,
        vector_weight: float | None = None,
        keyword_weight: float | None = None,
        query_embedding: np.ndarray | None = None,
        tenant: str | None = None,
    ) -> SearchResult:
        """TopN for ``query`` with every stage's ranks, scores and timings."""
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
        )
        timer = search_db.StageTimer()
        embedding = None
        embedder = self.embedder(target)
        if search_db.needs_load(options, embedder, query_embedding):
            with timer.stage("load"):
                await asyncio.to_thread(embedder.load)
        with timer.stage("embed"):
            if options.mode != "keyword":
                if query_embedding is None:
                    vector = await asyncio.to_thread(embedder.embed_query, options.query)
                else:
                    vector = query_embedding
                embedding = check_embedding(vector, target)
        async with self._pool.connection() as conn:
            with timer.stage("candidates"):
                candidates = await db.fetch_candidates(
                    conn,
                    target,
                    options,
                    embedding,
                    statement_timeout_ms=self.settings.statement_timeout_ms,
                )
            with timer.stage("rerank"):
                top, reranked, note = await asyncio.to_thread(
                    search_db.rerank_candidates,
                    candidates,
                    options,
                    self.reranker,
                    rerank,
                    self.settings.rerank_timeout_s,
                )
            top = await db.add_snippets(conn, target, options.query, top)
        return search_db.search_result(options, candidates, top, reranked, note, timer)
