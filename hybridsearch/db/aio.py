"""Async twins of the sync modules' database steps, for :mod:`hybridsearch.aio`.

Each function awaits the SQL and helpers of its sync counterpart (named in its
docstring) on a psycopg ``AsyncConnection``; none holds SQL of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector.psycopg import register_vector_async
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from hybridsearch import bulk, ingest
from hybridsearch import embedding_cache as cache
from hybridsearch import search as search_db
from hybridsearch.collections import Collection
from hybridsearch.errors import DatabaseError, SchemaNotInstalledError, from_database_error
from hybridsearch.models.embedder import Embedder
from hybridsearch.search import Hit
from hybridsearch.search_input import SearchOptions
from hybridsearch.tenancy import SET_TENANT_SQL, TENANT_SETTING

AsyncConnection = psycopg.AsyncConnection[Any]


async def _configure(conn: AsyncConnection) -> None:
    try:
        await register_vector_async(conn)
    except psycopg.ProgrammingError as exc:
        raise SchemaNotInstalledError(
            "the pgvector extension is not installed in this database; "
            "run `hybridsearch db upgrade` (needs a role allowed to CREATE EXTENSION vector)"
        ) from exc


async def open_async_pool(
    url: str, *, max_size: int = 4, timeout_s: float = 30.0
) -> AsyncConnectionPool[AsyncConnection]:
    """An async pool of autocommit connections with pgvector registered."""
    pool: AsyncConnectionPool[AsyncConnection] = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        timeout=timeout_s,
        kwargs={"autocommit": True},
        configure=_configure,
        open=False,
    )
    try:
        await pool.open(wait=True, timeout=timeout_s)
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"could not connect to the database: {exc}") from exc
    return pool


async def set_tenant(conn: AsyncConnection, tenant: str | None) -> None:
    """:func:`hybridsearch.tenancy.set_tenant`, awaited."""
    if tenant is not None:
        await conn.execute(SET_TENANT_SQL, (TENANT_SETTING, tenant))


async def stored_hashes(
    conn: AsyncConnection, collection: Collection, ids: list[str], tenant: str
) -> dict[str, str]:
    """Content hashes of the stored documents among ``ids``."""
    async with conn.transaction():
        await set_tenant(conn, tenant)
        cur = await conn.execute(ingest.STORED_HASHES_SQL, (collection.collection_id, tenant, ids))
        return dict(await cur.fetchall())


async def add_snippets(
    conn: AsyncConnection, collection: Collection, query: str, hits: list[Hit]
) -> list[Hit]:
    """:func:`hybridsearch.search.add_snippets`, awaited."""
    if not hits:
        return hits
    params = search_db.highlight_params(collection, query, hits)
    try:
        cur = await conn.execute(search_db.HIGHLIGHT_SQL, params)
        rows = await cur.fetchall()
    except psycopg.Error as exc:
        raise from_database_error(exc, f"highlighting results in {collection.name!r}") from exc
    return search_db.with_snippets(hits, rows)


async def embed_with_cache(
    conn: AsyncConnection, embedder: Embedder, texts: Sequence[str], *, document_prompt: str | None
) -> tuple[npt.NDArray[np.float32], int]:
    """:func:`hybridsearch.embedding_cache.embed_with_cache`, awaited."""
    key = cache.model_key(embedder, document_prompt)
    hashes = [cache.text_hash(t) for t in texts]
    cur = await conn.execute(cache.SELECT_CACHED_SQL, (key, list(set(hashes))))
    cached = cache.cached_vectors(await cur.fetchall())
    missing = cache.missing_texts(hashes, texts, cached)
    if missing:
        fresh = await asyncio.to_thread(embedder.embed_documents, [t for _, t in missing])
        cache.check_fresh(fresh, embedder, len(missing))
        async with conn.transaction(), conn.cursor() as cur:
            rows = [(key, h, fresh[i]) for i, (h, _) in enumerate(missing)]
            await cur.executemany(cache.INSERT_CACHED_SQL, rows)
        for i, (h, _) in enumerate(missing):
            cached[h] = fresh[i]
    return np.stack([cached[h] for h in hashes]), len(missing)


async def write_documents(
    conn: AsyncConnection,
    collection: Collection,
    prepared: Sequence[ingest.PreparedDocument],
    embeddings: np.ndarray,
    tenant: str,
) -> tuple[int, int]:
    """:func:`hybridsearch.ingest._write`, awaited: one transaction; (added, updated)."""
    async with conn.transaction(), conn.cursor() as cur:
        await set_tenant(conn, tenant)
        await cur.execute(
            ingest.UPSERT_DOCUMENTS_SQL, ingest.upsert_params(collection, prepared, tenant)
        )
        rows = await cur.fetchall()
        document_ids = {external_id: document_id for external_id, document_id, _ in rows}
        replaced = [document_id for _, document_id, inserted in rows if not inserted]
        if replaced:
            await cur.execute(ingest.DELETE_CHUNKS_SQL, (collection.collection_id, replaced))
        await cur.execute(ingest.CREATE_STAGING_SQL)
        async with cur.copy(ingest.COPY_STAGING_SQL) as copy:
            copy.set_types(ingest.STAGING_TYPES)
            for row in ingest.staging_rows(prepared, document_ids, embeddings):
                await copy.write_row(row)
        await cur.execute(
            ingest.INSERT_CHUNKS_SQL,
            (collection.collection_id, tenant, collection.analyzer),
        )
    return len(rows) - len(replaced), len(replaced)


@asynccontextmanager
async def deferred_indexes(conn: AsyncConnection, collection: Collection) -> AsyncIterator[None]:
    """:func:`hybridsearch.bulk.deferred_indexes` (without its memory settings)."""
    try:
        async with conn.transaction():
            await conn.execute(bulk.DROP_INDEXES_SQL, (collection.name,))
    except psycopg.Error as exc:
        raise from_database_error(exc, f"drop the indexes of {collection.name!r}") from exc
    try:
        yield
    finally:
        try:
            async with conn.transaction():
                await conn.execute(bulk.CREATE_INDEXES_SQL, (collection.name,))
                await conn.execute(bulk.analyze_sql(collection))
        except psycopg.Error as exc:
            raise from_database_error(exc, f"build the indexes of {collection.name!r}") from exc


async def delete_documents(
    conn: AsyncConnection, collection: Collection, ids: Sequence[str], tenant: str
) -> int:
    """:func:`hybridsearch.ingest.delete_documents`, awaited."""
    try:
        async with conn.transaction():
            await set_tenant(conn, tenant)
            cur = await conn.execute(
                ingest.DELETE_DOCUMENTS_SQL, (collection.collection_id, tenant, list(ids))
            )
    except psycopg.Error as exc:
        raise from_database_error(exc, f"delete from {collection.name!r}") from exc
    return cur.rowcount


async def fetch_candidates(
    conn: AsyncConnection,
    collection: Collection,
    options: SearchOptions,
    embedding: np.ndarray | None,
    *,
    statement_timeout_ms: int,
) -> list[Hit]:
    """:func:`hybridsearch.search.fetch_candidates`, awaited."""
    params = search_db.candidate_params(collection, options, embedding)
    try:
        async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            timeout = (str(statement_timeout_ms),)
            await cur.execute(search_db.SET_STATEMENT_TIMEOUT_SQL, timeout)
            await set_tenant(conn, options.tenant)
            await cur.execute(search_db.SEARCH_HYBRID_SQL, params)
            rows = await cur.fetchall()
    except psycopg.Error as exc:
        raise from_database_error(exc, f"search in {collection.name!r}") from exc
    return [search_db.hit_from_row(row) for row in rows]
