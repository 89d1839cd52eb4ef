"""Sweep TopK, fusion method, rrf_k, fusion weights and rerank depth on judged queries.

Every grid point is scored without querying again: each query's vector and keyword lists
are fetched once, as deep as the largest TopK, and fused in Python by
:func:`hybridsearch.fusion.fuse`, the reference that ``tests/sql`` proves equal to the SQL
fusion. A smaller TopK is the head of each branch list (exact for keyword search; HNSW
searched deeper is at least as accurate). The reranker scores each (query, chunk) once,
however many grid points rerank it.

Tune on a train split and confirm the winner on a held-out split with ``hybridsearch eval``.
Queries that cannot be evaluated are skipped and listed, as in ``hybridsearch eval``
(:mod:`hybridsearch.eval.beir`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hybridsearch.client import HybridSearch
from hybridsearch.collections import Collection
from hybridsearch.errors import InvalidInputError, QueryError
from hybridsearch.eval.beir import InputReport, Qrels, judged_queries
from hybridsearch.eval.metrics import Evaluator, parse_metric
from hybridsearch.eval.pipeline import branch_hits, missing_documents
from hybridsearch.eval.runs import Rankings, document_ranking, rerank_order, to_run
from hybridsearch.fusion import fuse
from hybridsearch.loaders import SkipLog
from hybridsearch.models.reranker import Reranker
from hybridsearch.params import FUSION, RRF_K, TOP_K, FusionMethod

#: Called with (phase, done, total); phases are "fetch" (per query) and "grid" (per point).
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Grid:
    """The values to try. A rerank depth of 0 means no reranking; depths above a TopK are
    skipped for it. Vector weight w pairs with keyword weight 1 - w, so w lies in [0, 1].
    TopK, fusion and rrf_k values are bounded as a search's (:mod:`hybridsearch.params`).
    """

    top_ks: tuple[int, ...] = (20, 50, 100)
    fusions: tuple[FusionMethod, ...] = FUSION.choices
    rrf_ks: tuple[int, ...] = (10, 30, 60, 100)
    vector_weights: tuple[float, ...] = (0.3, 0.5, 0.7)
    rerank_depths: tuple[int, ...] = (0,)

    def check(self) -> None:
        if not all((self.top_ks, self.fusions, self.vector_weights, self.rerank_depths)):
            raise InvalidInputError("every grid axis needs at least one value")
        if "rrf" in self.fusions and not self.rrf_ks:
            raise InvalidInputError("rrf fusion needs at least one rrf_k")
        for top_k in self.top_ks:
            TOP_K.check(top_k)
        for method in self.fusions:
            FUSION.check(method)
        for rrf_k in self.rrf_ks:
            RRF_K.check(rrf_k)
        if any(not 0.0 <= w <= 1.0 for w in self.vector_weights):
            raise InvalidInputError(
                f"vector weights must lie in [0, 1] (keyword weight = 1 - w), "
                f"got {self.vector_weights}"
            )
        if any(d < 0 for d in self.rerank_depths):
            raise InvalidInputError(f"rerank depths must be >= 0, got {self.rerank_depths}")
        if min(self.rerank_depths) > max(self.top_ks):
            raise InvalidInputError(
                f"every rerank depth {self.rerank_depths} exceeds the largest TopK {self.top_ks}"
            )

    def fusion_points(self) -> list[FusionPoint]:
        """Every (TopK, fusion, rrf_k, weights), deepest TopK first."""
        points: list[FusionPoint] = []
        for top_k, method, weight in itertools.product(
            sorted(self.top_ks, reverse=True), self.fusions, self.vector_weights
        ):
            rrf_ks: Sequence[int | None] = self.rrf_ks if method == "rrf" else (None,)
            points.extend(
                FusionPoint(top_k, method, rrf_k, weight, round(1.0 - weight, 6))
                for rrf_k in rrf_ks
            )
        return points


@dataclass(frozen=True)
class FusionPoint:
    """One way to build the fused TopK; ``rrf_k`` is None for weighted fusion."""

    top_k: int
    fusion: FusionMethod
    rrf_k: int | None
    vector_weight: float
    keyword_weight: float


@dataclass(frozen=True)
class TuneRow:
    """A grid point and its mean metrics; ``rerank_depth`` 0 is the fused list as is."""

    point: FusionPoint
    rerank_depth: int
    metrics: dict[str, float]

    def collection_settings(self) -> dict[str, Any]:
        """The collection defaults this row stands for (TopK and depth are per search)."""
        changes: dict[str, Any] = {
            "fusion": self.point.fusion,
            "vector_weight": self.point.vector_weight,
            "keyword_weight": self.point.keyword_weight,
        }
        if self.point.rrf_k is not None:
            changes["rrf_k"] = self.point.rrf_k
        return changes

    def to_dict(self) -> dict[str, Any]:
        return {
            "top_k": self.point.top_k,
            "fusion": self.point.fusion,
            "rrf_k": self.point.rrf_k,
            "vector_weight": self.point.vector_weight,
            "keyword_weight": self.point.keyword_weight,
            "rerank_depth": self.rerank_depth,
            **self.metrics,
        }


@dataclass(frozen=True)
class TuneResult:
    """Every grid point, best first by ``objective`` (ties: smaller TopK, shallower rerank).

    ``skipped`` counts the queries without a relevant judgment; ``input`` lists everything
    left out of the input, that reason included, and the judged documents not found.
    """

    queries: int
    skipped: int
    objective: str
    rows: list[TuneRow] = field(repr=False)
    reranked_pairs: int
    seconds: float
    input: InputReport = field(default_factory=InputReport)

    @property
    def best(self) -> TuneRow:
        return self.rows[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "skipped": self.skipped,
            "objective": self.objective,
            "best": self.best.to_dict(),
            "rows": [row.to_dict() for row in self.rows],
            "reranked_pairs": self.reranked_pairs,
            "seconds": round(self.seconds, 3),
            "input": self.input.to_dict(),
        }


@dataclass
class _Lists:
    """One query's branch lists as ``(chunk_id, distance or score)``, deepest TopK."""

    vector: list[tuple[int, float]]
    keyword: list[tuple[int, float]]


class _RerankCache:
    """Reranker scores per (query, chunk), each computed once, in one batch per call."""

    def __init__(self, reranker: Reranker, texts: Mapping[int, str]) -> None:
        self._reranker = reranker
        self._texts = texts
        self._scores: dict[tuple[str, int], float] = {}

    def __len__(self) -> int:
        return len(self._scores)

    def scores(self, qid: str, query: str, chunk_ids: Sequence[int]) -> list[float]:
        missing = [c for c in dict.fromkeys(chunk_ids) if (qid, c) not in self._scores]
        if missing:
            new = self._reranker.score(query, [self._texts[c] for c in missing])
            self._scores.update(((qid, c), float(s)) for c, s in zip(missing, new, strict=True))
        return [self._scores[(qid, c)] for c in chunk_ids]


def tune(
    hs: HybridSearch,
    collection: str,
    queries: Mapping[str, str],
    qrels: Qrels,
    grid: Grid | None = None,
    *,
    objective: str = "ndcg@10",
    metrics: Sequence[str] = ("ndcg@10", "recall@100", "mrr@10"),
    reranker: Reranker | None = None,
    on_progress: Progress | None = None,
    skips: SkipLog | None = None,
) -> TuneResult:
    """Score every grid point on the judged queries, best first by ``objective``.

    ``reranker`` defaults to the client's and is needed for rerank depths above 0.
    What cannot be evaluated is skipped into ``skips`` and listed in the result's
    ``input``, as :func:`~hybridsearch.eval.pipeline.evaluate_pipeline` does.
    """
    grid = grid or Grid()
    grid.check()
    parse_metric(objective)
    names = list(dict.fromkeys([objective, *metrics]))
    reranker = reranker or hs.reranker
    if reranker is None and any(grid.rerank_depths):
        raise InvalidInputError(
            "rerank depths above 0 need a reranker: pass --reranker (a cross-encoder name "
            "or path) or set HYBRIDSEARCH_RERANKER_MODEL, or tune with rerank depth 0"
        )
    target = hs.get_collection(collection)
    log = skips if skips is not None else SkipLog()
    judged, judged_qrels, skipped = judged_queries(
        queries, qrels, log, max_query_chars=hs.settings.max_query_chars
    )
    missing = missing_documents(hs, target, judged_qrels)
    started = time.perf_counter()
    lists, documents, texts = _fetch_lists(hs, target, judged, max(grid.top_ks), on_progress)
    cache = _RerankCache(reranker, texts) if reranker is not None else None

    evaluator = Evaluator(judged_qrels, names)
    points = grid.fusion_points()
    rows: list[TuneRow] = []
    for done, point in enumerate(points, start=1):
        depths = sorted({d for d in grid.rerank_depths if d <= point.top_k})
        rankings: dict[int, Rankings] = {depth: {} for depth in depths}
        for qid, query in judged.items():
            fused = fuse(
                lists[qid].vector[: point.top_k],
                lists[qid].keyword[: point.top_k],
                method=point.fusion,
                rrf_k=point.rrf_k if point.rrf_k is not None else RRF_K.default,
                vector_weight=point.vector_weight,
                keyword_weight=point.keyword_weight,
                limit=point.top_k,
            )
            order = [f.chunk_id for f in fused]
            for depth in depths:
                if depth and cache is not None:
                    scores = cache.scores(qid, query, order[:depth])
                    ranked = rerank_order(order, scores, depth)
                else:
                    ranked = order
                rankings[depth][qid] = document_ranking(documents[c] for c in ranked)
        rows.extend(
            TuneRow(point, depth, evaluator.mean(to_run(rankings[depth]))) for depth in depths
        )
        if on_progress is not None:
            on_progress("grid", done, len(points))

    rows.sort(key=lambda r: (-r.metrics[objective], r.point.top_k, r.rerank_depth))
    return TuneResult(
        queries=len(judged),
        skipped=skipped,
        objective=objective,
        rows=rows,
        reranked_pairs=len(cache) if cache is not None else 0,
        seconds=time.perf_counter() - started,
        input=InputReport.build(log, missing),
    )


def _fetch_lists(
    hs: HybridSearch,
    collection: Collection,
    queries: Mapping[str, str],
    top_k: int,
    on_progress: Progress | None,
) -> tuple[dict[str, _Lists], dict[int, str], dict[int, str]]:
    """Each query's branch lists, and every seen chunk's document id and text."""
    embedder = hs.embedder(collection)
    lists: dict[str, _Lists] = {}
    documents: dict[int, str] = {}
    texts: dict[int, str] = {}
    for done, (qid, query) in enumerate(queries.items(), start=1):
        try:
            embedding = embedder.embed_query(query)
            vector = branch_hits(hs, collection.name, query, "vector", top_k, embedding)
            keyword = branch_hits(hs, collection.name, query, "keyword", top_k, None)
        except QueryError as exc:
            raise QueryError(f"query {qid}: {exc}") from None
        for hit in (*vector, *keyword):
            documents[hit.chunk_id] = hit.document_id
            texts.setdefault(hit.chunk_id, hit.text)
        lists[qid] = _Lists(
            vector=[(h.chunk_id, h.scores.vector_distance or 0.0) for h in vector],
            keyword=[(h.chunk_id, h.scores.keyword_score or 0.0) for h in keyword],
        )
        if on_progress is not None:
            on_progress("fetch", done, len(queries))
    return lists, documents, texts


def save_best(hs: HybridSearch, collection: str, result: TuneResult) -> Collection:
    """Store the best row's fusion settings as the collection's defaults."""
    return hs.update_collection_settings(collection, **result.best.collection_settings())
