"""A search holds a pooled connection only for its SQL, and both clients fail alike.

With a pool of one connection, a search whose reranker takes seconds (the test fixtures'
real cross-encoder, made to wait first) must leave the connection free meanwhile: a
keyword search from another thread, or another asyncio task, finishes at once. The same
holds while a query is embedded. A pool that stays busy is a DatabaseError, with the
same message, from both clients.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from hybridsearch import (
    AsyncHybridSearch,
    DatabaseError,
    Document,
    HybridSearch,
    Reranker,
    SearchResult,
    Settings,
)
from hybridsearch.models.embedder import Embedder

SLOW_S = 2.0  # how long the slowed model waits before it works
FAST_S = 1.0  # a keyword search takes milliseconds; a held connection would cost SLOW_S

DOCS = [
    Document("pg", "PostgreSQL stores rows in tables and answers SQL queries.", {"topic": "db"}),
    Document("cat", "The domestic cat is a small mammal that purrs.", {"topic": "animals"}),
    Document("bread", "Bread is baked from flour, water, salt and yeast.", {"topic": "food"}),
]


class SlowReranker(Reranker):
    """The fixtures' trained cross-encoder; each scoring call waits SLOW_S first."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path), torch_threads=1)
        self.scoring = threading.Event()

    def score(self, query: str, passages: Sequence[str]) -> npt.NDArray[np.float32]:
        self.scoring.set()
        time.sleep(SLOW_S)
        return super().score(query, passages)


@pytest.fixture
def one_connection(settings: Settings) -> Settings:
    """The test settings with a pool of a single connection."""
    return replace(settings, pool_size=1, pool_timeout_ms=10_000)


@pytest.fixture
def indexed(hs: HybridSearch, collection_name: str) -> Iterator[str]:
    hs.create_collection(collection_name)
    hs.add_documents(collection_name, DOCS)
    yield collection_name


def _keyword_search_seconds(client: HybridSearch, collection: str) -> float:
    started = time.perf_counter()
    result = client.search(collection, "bread flour", mode="keyword", rerank=False)
    assert [h.document_id for h in result.results][:1] == ["bread"]
    return time.perf_counter() - started


def _check_reranked(result: SearchResult) -> None:
    """A finished reranked search: reranked, its rerank stage slow, its snippets there."""
    assert result.reranked is True
    assert result.results[0].document_id == "cat"
    assert result.timings_ms["rerank"] >= SLOW_S * 1000
    assert {"embed", "candidates", "rerank", "total"} <= set(result.timings_ms)
    assert "<mark>" in (result.results[0].snippet or "")
    assert result.to_dict()["results"][0]["snippet"] == result.results[0].snippet


def test_reranking_holds_no_connection(
    one_connection: Settings, trained_reranker: Path, indexed: str
) -> None:
    reranker = SlowReranker(trained_reranker)
    with HybridSearch(one_connection, reranker=reranker) as client:
        outcome: list[SearchResult | BaseException] = []

        def reranked_search() -> None:
            try:
                outcome.append(client.search(indexed, "which animal purrs", top_n=2))
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=reranked_search)
        thread.start()
        assert reranker.scoring.wait(timeout=120), "the reranked search never reached scoring"
        assert _keyword_search_seconds(client, indexed) < FAST_S
        thread.join(timeout=120)
    [result] = outcome
    assert isinstance(result, SearchResult), result
    _check_reranked(result)


def test_embedding_a_query_holds_no_connection(
    one_connection: Settings, indexed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedding = threading.Event()
    original = Embedder.embed_query

    def slow_embed_query(self: Embedder, text: str) -> npt.NDArray[np.float32]:
        embedding.set()
        time.sleep(SLOW_S)
        return original(self, text)

    monkeypatch.setattr(Embedder, "embed_query", slow_embed_query)
    with HybridSearch(one_connection) as client:
        client.embedder(client.get_collection(indexed)).load()  # no "load" stage to wait on
        thread = threading.Thread(
            target=client.search, args=(indexed, "which animal purrs"), kwargs={"rerank": False}
        )
        thread.start()
        assert embedding.wait(timeout=60)
        assert _keyword_search_seconds(client, indexed) < FAST_S
        thread.join(timeout=60)


def test_async_reranking_holds_no_connection(
    one_connection: Settings, trained_reranker: Path, indexed: str
) -> None:
    reranker = SlowReranker(trained_reranker)

    async def main() -> tuple[SearchResult, float, list[str]]:
        async with await AsyncHybridSearch.open(one_connection, reranker=reranker) as client:
            reranked = asyncio.create_task(client.search(indexed, "which animal purrs", top_n=2))
            assert await asyncio.to_thread(reranker.scoring.wait, 120)
            started = time.perf_counter()
            found = await client.search(indexed, "bread flour", mode="keyword", rerank=False)
            elapsed = time.perf_counter() - started
            return await reranked, elapsed, [h.document_id for h in found.results]

    result, elapsed, found = asyncio.run(main())
    assert elapsed < FAST_S
    assert found[:1] == ["bread"]
    _check_reranked(result)


def _exhausted_message(settings: Settings, indexed: str) -> str:
    """The error of a search by the sync client while its only connection is held."""
    with HybridSearch(settings) as client:
        held = client._pool.getconn()
        try:
            with pytest.raises(DatabaseError, match="connection pool exhausted") as raised:
                client.search(indexed, "bread", mode="keyword", rerank=False)
        finally:
            client._pool.putconn(held)
    return str(raised.value)


def test_both_clients_raise_the_same_error_when_the_pool_stays_busy(
    settings: Settings, indexed: str
) -> None:
    busy = replace(settings, pool_size=1, pool_timeout_ms=300)
    sync_message = _exhausted_message(busy, indexed)

    async def main() -> Any:
        async with await AsyncHybridSearch.open(busy) as client:
            async with client._pool.connection():
                started = time.perf_counter()
                with pytest.raises(DatabaseError) as raised:
                    await client.search(indexed, "bread", mode="keyword", rerank=False)
                assert time.perf_counter() - started < 3
            # the pool serves again once the connection is back
            again = await client.search(indexed, "bread", mode="keyword", rerank=False)
            assert again.results
            return raised.value

    error = asyncio.run(main())
    assert str(error) == sync_message
    assert "all 1 connections stayed busy for 0.3 s; raise HYBRIDSEARCH_POOL_SIZE" in sync_message
    assert error.__cause__ is None and error.__suppress_context__  # no psycopg_pool in sight
