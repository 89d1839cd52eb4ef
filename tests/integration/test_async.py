"""AsyncHybridSearch: the sync API's surface and results, over psycopg's async pool."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from hybridsearch import (
    AsyncHybridSearch,
    CollectionExistsError,
    CollectionNotFoundError,
    Document,
    DocumentError,
    HybridSearch,
    InvalidInputError,
    QueryError,
    SearchResult,
    Settings,
)
from hybridsearch.models.embedder import Embedder
from tests.model_fixtures import minilm_path

T = TypeVar("T")

DOCS = [
    Document("pg", "PostgreSQL stores rows in tables and answers SQL queries.", {"topic": "db"}),
    Document("cat", "The domestic cat is a small mammal that purrs.", {"topic": "animals"}),
    Document("bread", "Bread is baked from flour, water, salt and yeast.", {"topic": "food"}),
]


def run(settings: Settings, use: Callable[[AsyncHybridSearch], Awaitable[T]]) -> T:
    """Open the async client on a fresh event loop, run ``use`` with it, close it."""

    async def main() -> T:
        async with await AsyncHybridSearch.open(settings) as ahs:
            return await use(ahs)

    return asyncio.run(main())


def _comparable(result: SearchResult) -> dict[str, Any]:
    data = result.to_dict()
    data.pop("timings_ms")
    data["snippets"] = [hit.snippet for hit in result.results]
    return data


@pytest.fixture
def indexed(hs: HybridSearch, collection_name: str) -> Iterator[str]:
    """A collection created and filled through the sync API."""
    hs.create_collection(collection_name)
    hs.add_documents(collection_name, DOCS)
    yield collection_name


def test_model_load_is_a_stage_of_its_own(settings: Settings, indexed: str) -> None:
    """A client's first search loads the embedding model: reported as "load", so that
    "embed" is the query's own cost. The next search finds the model loaded."""
    with HybridSearch(settings) as fresh:
        first = fresh.search(indexed, "which animal purrs", rerank=False)
        second = fresh.search(indexed, "which animal purrs", rerank=False)
    assert set(first.timings_ms) == {"load", "embed", "candidates", "rerank", "total"}
    assert set(second.timings_ms) == {"embed", "candidates", "rerank", "total"}
    assert first.timings_ms["total"] >= first.timings_ms["load"] + first.timings_ms["embed"]
    assert [h.chunk_id for h in first.results] == [h.chunk_id for h in second.results]


def test_first_reranked_search_loads_both_models_in_the_load_stage(
    settings: Settings, indexed: str, tmp_path: Path
) -> None:
    """A one-shot search loads its embedder and reranker side by side, as one "load"
    stage; a reranker that cannot load still leaves the fused order, with the reason."""
    from sentence_transformers import CrossEncoder

    folder = tmp_path / "cross-encoder"
    CrossEncoder(str(minilm_path()), num_labels=1).save_pretrained(str(folder))
    with HybridSearch(settings, reranker=str(folder)) as fresh:
        assert fresh.reranker is not None and not fresh.reranker.loaded
        first = fresh.search(indexed, "which animal purrs", top_n=2)
        assert fresh.reranker.loaded and first.reranked
        second = fresh.search(indexed, "which animal purrs", top_n=2)
    assert "load" in first.timings_ms and "load" not in second.timings_ms
    with HybridSearch(settings, reranker=str(tmp_path / "no-such-model")) as broken:
        result = broken.search(indexed, "which animal purrs", top_n=2)
    assert not result.reranked and result.note is not None and "no-such-model" in result.note
    assert "load" in result.timings_ms and len(result.results) == 2


def test_collections_round_trip_with_the_sync_api(
    settings: Settings, hs: HybridSearch, collection_name: str
) -> None:
    async def use(ahs: AsyncHybridSearch) -> None:
        created = await ahs.create_collection(collection_name, distance="l2")
        assert created == hs.get_collection(collection_name)
        assert created.dimensions == 384
        with pytest.raises(CollectionExistsError, match="already exists"):
            await ahs.create_collection(collection_name)
        listed = {s.name: s for s in await ahs.list_collections()}
        assert (
            listed[collection_name] == {s.name: s for s in hs.list_collections()}[collection_name]
        )
        updated = await ahs.update_collection_settings(collection_name, fusion="weighted")
        assert updated.settings.fusion == "weighted"
        assert hs.get_collection(collection_name).settings.fusion == "weighted"
        assert await ahs.drop_collection(collection_name) is True
        assert await ahs.drop_collection(collection_name) is False
        with pytest.raises(CollectionNotFoundError, match=collection_name):
            await ahs.get_collection(collection_name)

    run(settings, use)


def test_ingest_is_idempotent_and_visible_to_the_sync_api(
    settings: Settings, hs: HybridSearch, collection_name: str
) -> None:
    async def use(ahs: AsyncHybridSearch) -> tuple[Any, Any, int, int]:
        await ahs.create_collection(collection_name)
        first = await ahs.add_documents(collection_name, DOCS, batch_size=2)
        again = await ahs.add_documents(collection_name, DOCS)
        other_tenant = await ahs.delete_documents(collection_name, ["cat"], tenant="other")
        deleted = await ahs.delete_documents(collection_name, ["cat", "missing"])
        return first, again, other_tenant, deleted

    first, again, other_tenant, deleted = run(settings, use)
    assert (first.added, first.updated, first.unchanged, first.chunks) == (3, 0, 0, 3)
    assert (again.added, again.unchanged, again.embedded) == (0, 3, 0)
    assert (other_tenant, deleted) == (0, 1)
    stats = {s.name: s for s in hs.list_collections()}[collection_name]
    assert (stats.documents, stats.chunks) == (2, 2)
    hits = hs.search(collection_name, "bread flour yeast", top_n=1, rerank=False).results
    assert hits[0].document_id == "bread"


def test_bulk_ingest_rebuilds_the_indexes_and_finds_the_same(
    settings: Settings, collection_name: str, conn: psycopg.Connection
) -> None:
    async def use(ahs: AsyncHybridSearch) -> tuple[Any, list[str]]:
        await ahs.create_collection(collection_name)
        report = await ahs.add_documents(collection_name, DOCS, batch_size=2, bulk=True)
        hits = await ahs.search(collection_name, "bread flour yeast", top_n=1, rerank=False)
        return report, [h.document_id for h in hits.results]

    report, found = run(settings, use)
    assert (report.added, report.chunks) == (3, 3)
    assert found == ["bread"]
    rebuilt = conn.execute("SELECT hybridsearch.create_chunk_indexes(%s)", (collection_name,))
    assert rebuilt.fetchone() == (0,)  # all four were rebuilt: none was missing


def test_search_returns_what_the_sync_api_returns(
    settings: Settings, hs: HybridSearch, indexed: str
) -> None:
    queries = [
        ("which animal purrs", {}),
        ("rows and tables", {"mode": "keyword"}),
        ("small mammal", {"mode": "vector", "top_k": 2, "top_n": 2}),
        ("baked food", {"filter": {"topic": "food"}, "fusion": "weighted"}),
    ]

    async def use(ahs: AsyncHybridSearch) -> list[SearchResult]:
        # Concurrent searches share the pool and each gets its own connection.
        found = await asyncio.gather(
            *(ahs.search(indexed, q, rerank=False, **options) for q, options in queries)
        )
        return [*found, await ahs.search(indexed, "which animal purrs", rerank=False)]

    *results, again = run(settings, use)
    for (query, options), result in zip(queries, results, strict=True):
        expected = hs.search(indexed, query, rerank=False, **options)
        assert _comparable(result) == _comparable(expected)
        assert [h.chunk_id for h in result.candidates] == [h.chunk_id for h in expected.candidates]
    assert results[0].results[0].document_id == "cat"
    assert results[0].note == "reranking turned off for this search; results are in fused order"
    # the client's first search loads the embedding model, reported apart from "embed";
    # later ones find it loaded
    assert set(results[0].timings_ms) == {"load", "embed", "candidates", "rerank", "total"}
    assert set(again.timings_ms) == {"embed", "candidates", "rerank", "total"}
    assert "load" not in results[1].timings_ms  # keyword search embeds nothing


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda a, c: a.search(c, "   "), QueryError, "empty"),
        (lambda a, c: a.search(c, "x", top_k=2, top_n=3), InvalidInputError, "cannot exceed"),
        (lambda a, c: a.search("no_such_collection", "x"), CollectionNotFoundError, "no_such"),
        (lambda a, c: a.search(c, "x", filter="[1]"), InvalidInputError, "JSON object"),
        (lambda a, c: a.add_documents(c, [Document("d", "a\x00b")]), DocumentError, "NUL"),
        (lambda a, c: a.create_collection("bad name!"), InvalidInputError, "invalid collection"),
    ],
)
def test_bad_input_raises_the_sync_api_errors(
    settings: Settings,
    indexed: str,
    call: Callable[[AsyncHybridSearch, str], Awaitable[Any]],
    error: type[Exception],
    message: str,
) -> None:
    async def use(ahs: AsyncHybridSearch) -> None:
        with pytest.raises(error, match=message):
            await call(ahs, indexed)

    run(settings, use)


def test_model_inference_runs_off_the_event_loop(
    settings: Settings, collection_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[threading.Thread] = []
    for method in ("embed_documents", "embed_query"):
        original = getattr(Embedder, method)

        def recording(self: Embedder, texts: Any, _original: Any = original) -> Any:
            threads.append(threading.current_thread())
            return _original(self, texts)

        monkeypatch.setattr(Embedder, method, recording)

    # Text no earlier test embedded, so the embedding cache cannot answer for the model.
    fresh = [Document(d.id, f"{d.text} {collection_name}", d.metadata) for d in DOCS]

    async def use(ahs: AsyncHybridSearch) -> threading.Thread:
        await ahs.create_collection(collection_name)
        await ahs.add_documents(collection_name, fresh)
        await ahs.search(collection_name, "purring cat", rerank=False)
        return threading.current_thread()

    loop_thread = run(settings, use)
    assert len(threads) == 2  # one batch of chunks, one query
    assert loop_thread not in threads
