"""Reranker faults: a failed load, an exception, bad scores or a slow model give the
fused TopN flagged ``reranked=False``, within budget.

No model is loaded: the faulty rerankers are ``Reranker`` subclasses (or a path that
does not exist), so these run in seconds. tests/integration/test_rerank.py covers the
same faults with a trained cross-encoder.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest

from hybridsearch import Document, HybridSearch, Reranker, SearchResult, Settings
from hybridsearch.db.store import drop_collection, ingest_documents
from tests.reliability.support import (
    SENTENCES,
    HashEmbedder,
    connect,
    create_test_collection,
)

BUDGET_MS = 1000.0  # a failing reranker must cost (almost) nothing
QUERY = "postgres search"


class _Raises(Reranker):
    def score(self, query: str, passages: Sequence[str]) -> npt.NDArray[np.float32]:
        raise RuntimeError("CUDA out of memory (simulated)")


class _NaNScores(Reranker):
    def score(self, query: str, passages: Sequence[str]) -> npt.NDArray[np.float32]:
        scores = np.linspace(1, 0, len(passages), dtype=np.float32)
        scores[0] = np.nan
        return scores


class _TooFewScores(Reranker):
    def score(self, query: str, passages: Sequence[str]) -> npt.NDArray[np.float32]:
        return np.ones(max(0, len(passages) - 1), dtype=np.float32)


class _Slow(Reranker):
    """Answers correctly (reversed fused order) after a long time."""

    def score(self, query: str, passages: Sequence[str]) -> npt.NDArray[np.float32]:
        time.sleep(3)
        return np.arange(len(passages), dtype=np.float32)


@pytest.fixture(scope="module")
def collection(database_url: str) -> Iterator[str]:
    with connect(database_url) as conn:
        target = create_test_collection(conn, f"rerank_{uuid.uuid4().hex[:8]}", 8)
        docs = [Document(f"d{i}", f"{SENTENCES[i]} Postgres search.") for i in range(30)]
        ingest_documents(conn, target, HashEmbedder(8), docs)
        yield target.name
        drop_collection(conn, target.name)


def _search(settings: Settings, reranker: Reranker, collection: str) -> tuple[SearchResult, float]:
    with HybridSearch(settings, reranker=reranker) as hs:
        fused = hs.search(collection, QUERY, mode="keyword", top_k=20, top_n=5, rerank=False)
        started = time.perf_counter()
        result = hs.search(collection, QUERY, mode="keyword", top_k=20, top_n=5)
        elapsed_ms = (time.perf_counter() - started) * 1000
    assert result.reranked is False
    assert result.note is not None and "fused order" in result.note
    assert [h.chunk_id for h in result.results] == [h.chunk_id for h in fused.results]
    assert [h.rank for h in result.results] == [1, 2, 3, 4, 5]
    assert all(h.scores.rerank is None for h in result.results)
    return result, elapsed_ms


def test_load_failure_falls_back(settings: Settings, collection: str) -> None:
    reranker = Reranker(f"/nonexistent/reranker-{uuid.uuid4().hex}")
    result, _ = _search(settings, reranker, collection)
    assert "could not load" in (result.note or "") or "failed" in (result.note or "")
    assert result.timings_ms["rerank"] < BUDGET_MS
    # the failed load is remembered: the next search does not retry it
    again, _ = _search(settings, reranker, collection)
    assert again.timings_ms["rerank"] < BUDGET_MS
    assert reranker.load_error is not None


def test_exception_falls_back(settings: Settings, collection: str) -> None:
    result, _ = _search(settings, _Raises("unused"), collection)
    assert "out of memory" in (result.note or "")
    assert result.timings_ms["rerank"] < BUDGET_MS


@pytest.mark.parametrize("reranker_class", [_NaNScores, _TooFewScores], ids=["NaN", "too-few"])
def test_bad_scores_fall_back(
    settings: Settings, collection: str, reranker_class: type[Reranker]
) -> None:
    result, _ = _search(settings, reranker_class("unused"), collection)
    assert result.timings_ms["rerank"] < BUDGET_MS


def test_slow_reranker_times_out(settings: Settings, collection: str) -> None:
    budget = replace(settings, rerank_timeout_ms=300)
    result, elapsed_ms = _search(budget, _Slow("unused"), collection)
    assert "timed out" in (result.note or "")
    assert result.timings_ms["rerank"] < 300 + BUDGET_MS
    assert elapsed_ms < 300 + 2 * BUDGET_MS
