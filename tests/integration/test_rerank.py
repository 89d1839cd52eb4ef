"""The rerank stage: a real cross-encoder reorders the fused TopK; faults fall back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from hybridsearch import (
    AsyncHybridSearch,
    HybridSearch,
    InvalidInputError,
    Reranker,
    SearchResult,
    Settings,
)
from hybridsearch.eval.beir import load_qrels
from hybridsearch.params import RERANK_DEPTH, TOP_K
from tests.model_fixtures import scifact_sample_documents

# Training pairs come from the first 400 judged train queries; these come after them.
HELD_OUT = slice(700, 712)


@pytest.fixture(scope="module")
def scifact_sample(hs: HybridSearch, scifact_dir: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """Relevant documents of a few held-out train queries plus 150 distractors."""
    chosen, _, docs = scifact_sample_documents(scifact_dir, HELD_OUT, distractors=150)
    name = "rerank_sample"
    hs.drop_collection(name)
    hs.create_collection(name)
    hs.add_documents(name, docs)
    yield name, chosen
    hs.drop_collection(name)


def test_rerank_orders_top_n_by_cross_encoder(
    settings: Settings, trained_reranker: Path, scifact_sample: tuple[str, dict[str, str]]
) -> None:
    name, queries = scifact_sample
    with HybridSearch(settings, reranker=str(trained_reranker)) as hs:
        for query in queries.values():
            result = hs.search(name, query, top_k=20, top_n=5)
            assert result.reranked is True
            assert result.note is None
            assert [h.rank for h in result.results] == list(range(1, len(result.results) + 1))
            scores = [h.scores.rerank for h in result.results]
            assert all(s is not None for s in scores)
            assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
            # TopN is drawn from the fused TopK and keeps every stage's scores
            candidates = {h.chunk_id: h for h in result.candidates}
            for hit in result.results:
                assert candidates[hit.chunk_id].scores.fused == hit.scores.fused
            # one chunk per document (the default), and no chunk of a document left out
            # outranks what was kept
            kept = {h.document_id for h in result.results}
            assert len(kept) == len(result.results)
            best_dropped = max(
                (
                    s
                    for h, s in zip(result.candidates, _rescore(hs, query, result), strict=True)
                    if h.document_id not in kept
                ),
                default=-np.inf,
            )
            assert best_dropped <= min(scores) + 1e-5  # type: ignore[type-var]
            assert result.timings_ms["rerank"] > 0


def _rescore(hs: HybridSearch, query: str, result: object) -> npt.NDArray[np.float32]:
    assert hs.reranker is not None
    return hs.reranker.score(query, [h.text for h in result.candidates])  # type: ignore[attr-defined]


def test_rerank_improves_on_fused_order(
    settings: Settings,
    trained_reranker: Path,
    scifact_dir: Path,
    scifact_sample: tuple[str, dict[str, str]],
) -> None:
    """Over the held-out queries the reranked TopN finds relevant documents at least as often."""
    name, queries = scifact_sample
    qrels = load_qrels(scifact_dir / "qrels" / "train.tsv")
    hits = {"fused": 0, "reranked": 0}
    with HybridSearch(settings, reranker=str(trained_reranker)) as hs:
        for qid, query in queries.items():
            reranked = hs.search(name, query, top_k=30, top_n=1)
            fused = hs.search(name, query, top_k=30, top_n=1, rerank=False)
            hits["reranked"] += reranked.results[0].document_id in qrels[qid]
            hits["fused"] += fused.results[0].document_id in qrels[qid]
    assert hits["reranked"] >= hits["fused"], hits


class _Exploding(Reranker):
    def score(self, query: str, passages: object) -> npt.NDArray[np.float32]:  # type: ignore[override]
        raise RuntimeError("CUDA out of memory (simulated)")


class _NaN(Reranker):
    def score(self, query: str, passages: object) -> npt.NDArray[np.float32]:  # type: ignore[override]
        scores = super().score(query, passages)  # type: ignore[arg-type]
        scores[0] = np.nan
        return scores


@pytest.mark.parametrize("kind", ["broken folder", "raises", "missing"])
def test_failing_reranker_returns_fused_top_n(
    settings: Settings,
    tmp_path: Path,
    scifact_sample: tuple[str, dict[str, str]],
    kind: str,
    trained_reranker: Path,
) -> None:
    name, queries = scifact_sample
    query = next(iter(queries.values()))
    if kind == "broken folder":
        (tmp_path / "config.json").write_text("{not json")
        reranker: Reranker | None = Reranker(str(tmp_path))
    elif kind == "raises":
        reranker = _Exploding(str(trained_reranker))
    else:
        reranker = None
    with HybridSearch(settings, reranker=reranker) as hs:
        result = hs.search(name, query, top_k=20, top_n=3)
        plain = hs.search(name, query, top_k=20, top_n=3, rerank=False)
    assert result.reranked is False
    assert result.note is not None
    expected_note = {"broken folder": "failed", "raises": "out of memory", "missing": "no reranker"}
    assert expected_note[kind] in result.note
    assert [h.chunk_id for h in result.results] == [h.chunk_id for h in plain.results]
    assert all(h.scores.rerank is None for h in result.results)


def test_nan_scores_fall_back(
    settings: Settings, trained_reranker: Path, scifact_sample: tuple[str, dict[str, str]]
) -> None:
    name, queries = scifact_sample
    with HybridSearch(settings, reranker=_NaN(str(trained_reranker))) as hs:
        result = hs.search(name, next(iter(queries.values())), top_k=10, top_n=3)
    assert result.reranked is False
    assert result.note is not None and "NaN" in result.note


# -- rerank depth --------------------------------------------------------------------------


class _Counting(Reranker):
    """The trained reranker, recording how many passages each call scores."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.calls: list[int] = []

    def score(self, query: str, passages: object) -> npt.NDArray[np.float32]:  # type: ignore[override]
        self.calls.append(len(passages))  # type: ignore[arg-type]
        return super().score(query, passages)  # type: ignore[arg-type]


def test_rerank_depth_scores_the_first_candidates_and_keeps_the_rest_in_fused_order(
    settings: Settings, trained_reranker: Path, scifact_sample: tuple[str, dict[str, str]]
) -> None:
    name, queries = scifact_sample
    reranker = _Counting(str(trained_reranker))
    depth, top_n = 4, 9  # TopN deeper than the depth: the reranked four, then fused order
    # Chunk by chunk: one chunk per document would cut repeated documents out of both parts.
    every = {"one_per_document": False}
    with HybridSearch(settings, reranker=reranker) as hs:
        moved = 0
        for query in queries.values():
            result = hs.search(name, query, top_k=20, top_n=top_n, rerank_depth=depth, **every)
            assert reranker.calls[-1] == depth  # the cross-encoder saw the first four only
            assert result.reranked is True and result.rerank_depth == depth
            assert result.to_dict()["rerank_depth"] == depth
            fused = [h.chunk_id for h in result.candidates]
            assert len(fused) == 20
            head, tail = result.results[:depth], result.results[depth:]
            # the head: exactly the first four fused candidates, by the reranker's score
            assert {h.chunk_id for h in head} == set(fused[:depth])
            expected = reranker.score(query, [h.text for h in result.candidates[:depth]])
            by_id = dict(zip(fused[:depth], expected.tolist(), strict=True))
            scores = [h.scores.rerank for h in head]
            assert scores == pytest.approx([by_id[h.chunk_id] for h in head], abs=1e-5)
            assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
            # the tail: the candidates below the depth, unscored, in fused order
            assert [h.chunk_id for h in tail] == fused[depth:top_n]
            assert all(h.scores.rerank is None for h in tail)
            assert [h.rank for h in result.results] == list(range(1, top_n + 1))
            moved += [h.chunk_id for h in head] != fused[:depth]
        assert moved > 0, "the reranker never reordered the head; the test proves nothing"

        # no depth: all of TopK, as before the parameter existed, and reported so
        whole = hs.search(name, next(iter(queries.values())), top_k=20, top_n=3)
        assert reranker.calls[-1] == 20 and whole.rerank_depth == 20
        # a depth below TopN of a short TopK: TopN from the reranked ones, then fused order
        short = hs.search(
            name, next(iter(queries.values())), top_k=3, top_n=3, rerank_depth=1, **every
        )
        assert reranker.calls[-1] == 1
        assert [h.chunk_id for h in short.results] == [h.chunk_id for h in short.candidates]
        assert [h.scores.rerank is None for h in short.results] == [False, True, True]


def test_rerank_depth_is_refused_beyond_top_k_or_its_bounds(
    settings: Settings, trained_reranker: Path, scifact_sample: tuple[str, dict[str, str]]
) -> None:
    name, queries = scifact_sample
    reranker = _Counting(str(trained_reranker))
    query = next(iter(queries.values()))
    with HybridSearch(settings, reranker=reranker) as hs:
        with pytest.raises(
            InvalidInputError, match=r"rerank_depth \(21\) cannot exceed top_k \(20\)"
        ):
            hs.search(name, query, top_k=20, rerank_depth=21)
        for bad in (RERANK_DEPTH.minimum - 1, RERANK_DEPTH.maximum + 1, 2.0, True):
            with pytest.raises(InvalidInputError, match="rerank_depth must be an integer"):
                hs.search(name, query, top_k=TOP_K.maximum, rerank_depth=bad)
        # at the bounds it searches
        hs.search(name, query, top_k=20, top_n=1, rerank_depth=RERANK_DEPTH.minimum)
    assert reranker.calls == [1]  # nothing refused reached the reranker


def test_async_search_takes_the_rerank_depth(
    settings: Settings, trained_reranker: Path, scifact_sample: tuple[str, dict[str, str]]
) -> None:
    name, queries = scifact_sample
    query = next(iter(queries.values()))
    reranker = _Counting(str(trained_reranker))

    async def main() -> SearchResult:
        async with await AsyncHybridSearch.open(settings, reranker=reranker) as ahs:
            found = await ahs.search(
                name, query, top_k=10, top_n=5, rerank_depth=3, one_per_document=False
            )
            with pytest.raises(InvalidInputError, match="cannot exceed top_k"):
                await ahs.search(name, query, top_k=10, rerank_depth=11)
            return found

    found = asyncio.run(main())
    assert reranker.calls == [3] and found.rerank_depth == 3
    with HybridSearch(settings, reranker=reranker) as hs:
        expected = hs.search(name, query, top_k=10, top_n=5, rerank_depth=3, one_per_document=False)
    assert [h.chunk_id for h in found.results] == [h.chunk_id for h in expected.results]
    assert [h.scores.rerank is None for h in found.results] == [False] * 3 + [True] * 2
