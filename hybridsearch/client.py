"""The Python service API: one object that owns the pool, the models and the settings."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from types import TracebackType
from typing import Any

import numpy as np
import psycopg
from psycopg_pool import PoolTimeout

from hybridsearch import collections as collections_db
from hybridsearch.bulk import deferred_indexes
from hybridsearch.collections import Collection, CollectionSettings, CollectionStats, Distance
from hybridsearch.config import Settings
from hybridsearch.db import migrate
from hybridsearch.db.connection import database_url, open_pool
from hybridsearch.errors import DatabaseError, SchemaNotInstalledError
from hybridsearch.ingest import (
    Document,
    IngestReport,
    check_dimensions,
    delete_documents,
    ingest_documents,
)
from hybridsearch.models.configured import configured_embedder, configured_reranker
from hybridsearch.models.embedder import Embedder
from hybridsearch.models.reranker import Reranker
from hybridsearch.search import SearchResult, run_search
from hybridsearch.search_input import Mode, validate_options


class HybridSearch:
    """Hybrid search over one PostgreSQL database.

    ``HybridSearch()`` opens the database named by the settings (the embedded server by
    default) and, for the embedded server, installs or upgrades the schema. An external
    database must be migrated with ``hybridsearch db upgrade`` first.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        reranker: Reranker | str | None = None,
        migrate_schema: bool | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.url = database_url(self.settings)
        embedded = self.settings.database_url is None
        if migrate_schema if migrate_schema is not None else embedded:
            migrate.upgrade(self.url)
        elif migrate.current_revision(self.url) is None:
            raise SchemaNotInstalledError(
                "the hybridsearch schema is not installed in this database; "
                "run `hybridsearch db upgrade` first"
            )
        self._pool = open_pool(
            self.url,
            max_size=self.settings.pool_size,
            timeout_s=self.settings.pool_timeout_ms / 1000,
        )
        self._embedders: dict[tuple[str, str | None, str | None], Embedder] = {}
        reranker = reranker if reranker is not None else self.settings.reranker_model
        self.reranker = self._make_reranker(reranker) if isinstance(reranker, str) else reranker

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> HybridSearch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection, or a DatabaseError when none frees up in time."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout:
            raise DatabaseError(
                f"connection pool exhausted: all {self._pool.max_size} connections stayed busy "
                f"for {self._pool.timeout:g} s; raise HYBRIDSEARCH_POOL_SIZE or retry later"
            ) from None

    # -- models --------------------------------------------------------------------------

    def _make_reranker(self, model: str) -> Reranker:
        return configured_reranker(model, self.settings)

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

    def create_collection(
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
        model = model or self.settings.embedding_model
        probe = configured_embedder(
            model,
            self.settings,
            query_prompt=settings.query_prompt,
            document_prompt=settings.document_prompt,
        )
        with self._connection() as conn:
            return collections_db.create_collection(
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

    def get_collection(self, name: str) -> Collection:
        with self._connection() as conn:
            return collections_db.get_collection(conn, name)

    def list_collections(self) -> list[CollectionStats]:
        with self._connection() as conn:
            return collections_db.list_collections(conn)

    def update_collection_settings(self, name: str, **changes: Any) -> Collection:
        """Change a collection's defaults, e.g. ``fusion="weighted", vector_weight=0.7``.

        Chunking and prompt changes apply to documents added afterwards (changed
        documents are re-chunked on their next ingest).
        """
        current = self.get_collection(name).settings
        updated = replace(current, **changes)
        with self._connection() as conn:
            return collections_db.update_settings(conn, name, updated)

    def drop_collection(self, name: str) -> bool:
        with self._connection() as conn:
            return collections_db.drop_collection(conn, name)

    # -- documents -----------------------------------------------------------------------

    def add_documents(
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
        target = self.get_collection(collection)
        embedder = self.embedder(target)
        # A model that cannot load must fail before the indexes are dropped, not after.
        check_dimensions(embedder, target)
        with self._connection() as conn, deferred_indexes(conn, target) if bulk else nullcontext():
            return ingest_documents(
                conn,
                target,
                embedder,
                documents,
                batch_size=batch_size,
                max_document_chars=self.settings.max_document_chars,
                on_progress=on_progress,
                tenant=tenant,
            )

    def delete_documents(self, collection: str, ids: Sequence[str], *, tenant: str = "") -> int:
        target = self.get_collection(collection)
        with self._connection() as conn:
            return delete_documents(conn, target, ids, tenant)

    # -- search --------------------------------------------------------------------------

    def search(
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
        """TopN for ``query`` with every stage's ranks, scores and timings.

        ``query_embedding`` skips embedding the query (it must match the collection).
        ``tenant`` restricts the search to one tenant's documents.
        """
        target = self.get_collection(collection)
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
        with self._connection() as conn:
            return run_search(
                conn,
                target,
                options,
                embedder=self.embedder(target),
                query_embedding=query_embedding,
                reranker=self.reranker,
                rerank=rerank,
                statement_timeout_ms=self.settings.statement_timeout_ms,
                rerank_timeout_s=self.settings.rerank_timeout_s,
            )
