"""Score every stage of the search pipeline on the same judged queries, at document level.

Each query goes through the service as a user's search does, embedded once for all stages:

* ``vector`` and ``keyword``: each branch's TopK alone (``hs.search`` in that mode);
* ``hybrid``: the fused TopK from ``hybridsearch.search_hybrid`` (fusion in SQL);
* ``rerank``: the cross-encoder scores the head of the fused TopK (all of it by default,
  as search does) and its TopN come first, then the rest of the fused list in fused order.

Queries that cannot be evaluated (empty text, no relevant judgment, ...) are skipped and
listed, never fatal: :mod:`hybridsearch.eval.beir` says what is skipped and why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import psycopg

from hybridsearch.client import HybridSearch
from hybridsearch.collections import Collection
from hybridsearch.db.connection import checkout
from hybridsearch.errors import InvalidInputError, QueryError, from_database_error
from hybridsearch.eval.beir import InputReport, Qrels, judged_queries, relevant_documents
from hybridsearch.eval.metrics import DEFAULT_KS, Evaluator, metric_names
from hybridsearch.eval.runs import Rankings, document_ranking, rerank_order, to_run
from hybridsearch.loaders import SkipLog
from hybridsearch.models.reranker import Reranker, combine_with_fused
from hybridsearch.params import (
    FUSION,
    KEYWORD_WEIGHT,
    RRF_K,
    TOP_K,
    TOP_N,
    VECTOR_WEIGHT,
    FusionMethod,
    Mode,
)
from hybridsearch.search import Hit

Stage = Literal["vector", "keyword", "hybrid", "rerank"]
STAGES: tuple[Stage, ...] = ("vector", "keyword", "hybrid", "rerank")

#: Called after each query with (queries done, queries in all).
Progress = Callable[[int, int], None]


def parse_stages(text: str) -> tuple[Stage, ...]:
    """Stages from ``"vector,hybrid"``, in pipeline order."""
    wanted = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(wanted - set(STAGES))
    if unknown or not wanted:
        raise InvalidInputError(
            f"unknown stage(s) {', '.join(unknown) or '(none given)'}: "
            f"choose from {', '.join(STAGES)}"
        )
    return tuple(stage for stage in STAGES if stage in wanted)


@dataclass(frozen=True)
class PipelineConfig:
    """Search parameters for an evaluation; ``None`` takes the collection's default.

    ``rerank_depth`` is how many fused candidates the cross-encoder scores (``None``: all
    TopK, as search does); ``top_n`` of them are ranked by it. TopK and TopN default deeper
    than a search's (:mod:`hybridsearch.params`) so that recall@100 and ndcg@10 are defined.
    """

    top_k: int = 100
    top_n: int = 10
    rerank_depth: int | None = None
    fusion: FusionMethod | None = None
    rrf_k: int | None = None
    vector_weight: float | None = None
    keyword_weight: float | None = None

    def check(self) -> None:
        """InvalidInputError for a parameter outside its declared bounds, or depths out of
        order; a search would refuse the same values, but only at the first query."""
        TOP_K.check(self.top_k)
        TOP_N.check(self.top_n)
        for param, value in (
            (FUSION, self.fusion),
            (RRF_K, self.rrf_k),
            (VECTOR_WEIGHT, self.vector_weight),
            (KEYWORD_WEIGHT, self.keyword_weight),
        ):
            if value is not None:
                param.check(value)
        depth = self.top_k if self.rerank_depth is None else self.rerank_depth
        if not 1 <= self.top_n <= depth <= self.top_k:
            raise InvalidInputError(
                f"need 1 <= top_n ({self.top_n}) <= rerank_depth ({depth}) <= "
                f"top_k ({self.top_k}): the reranker ranks TopN out of the candidates it scores"
            )


@dataclass(frozen=True)
class PipelineEvaluation:
    """Mean metrics per stage over the judged queries, and each stage's document rankings.

    ``skipped`` counts the queries without a relevant judgment; ``input`` lists everything
    left out of the input, that reason included, and the judged documents not found.
    """

    queries: int
    skipped: int
    ks: tuple[int, ...]
    stages: dict[str, dict[str, float]]
    rankings: dict[str, Rankings] = field(repr=False)
    config: dict[str, Any]
    timings_s: dict[str, float]
    input: InputReport = field(default_factory=InputReport)

    def to_dict(self) -> dict[str, Any]:
        """The JSON report: ``{"queries": n, "skipped": m, "stages": {stage: {metric: x}},
        "input": {"skipped": [...], "missing_documents": {...}}, ...}``."""
        return {
            "queries": self.queries,
            "skipped": self.skipped,
            "stages": self.stages,
            "config": self.config,
            "timings_s": self.timings_s,
            "input": self.input.to_dict(),
        }


_PRESENT_SQL = (
    "SELECT DISTINCT external_id FROM hybridsearch.documents"
    " WHERE collection_id = %s AND external_id = ANY(%s)"
)


def missing_documents(hs: HybridSearch, collection: Collection, qrels: Qrels) -> list[str]:
    """The documents judged relevant in ``qrels`` that ``collection`` does not hold, in
    order of first judgment. Read as the evaluation's searches read (no tenant set), so
    a document they cannot see is missing here too."""
    wanted = relevant_documents(qrels)
    try:
        with checkout(hs._pool) as conn:
            rows = conn.execute(_PRESENT_SQL, (collection.collection_id, wanted)).fetchall()
    except psycopg.Error as exc:
        raise from_database_error(exc, "looking up the judged documents") from exc
    present = {row[0] for row in rows}
    return [doc for doc in wanted if doc not in present]


def weights_source(config: PipelineConfig, collection: Collection) -> str:
    """Where the hybrid's fusion weights came from, for the report."""
    if config.vector_weight is not None or config.keyword_weight is not None:
        return "given"
    stored = collection.settings
    if stored.sets_weights:
        return "collection settings"
    return "calibration" if stored.calibration is not None else "defaults"


def branch_hits(
    hs: HybridSearch,
    collection: str,
    query: str,
    mode: Mode,
    top_k: int,
    embedding: np.ndarray | None,
) -> list[Hit]:
    """One branch's TopK in its own rank order.

    Alone in the fusion with RRF and weight 1, a branch keeps its order (1 / (k + rank)
    falls with rank), whatever the collection's fusion defaults are.
    """
    return hs.search(
        collection,
        query,
        top_k=top_k,
        top_n=1,
        mode=mode,
        rerank=False,
        fusion="rrf",
        vector_weight=1.0,
        keyword_weight=1.0,
        query_embedding=embedding,
    ).candidates


def evaluate_pipeline(
    hs: HybridSearch,
    collection: str,
    queries: Mapping[str, str],
    qrels: Qrels,
    *,
    stages: Sequence[Stage] = STAGES,
    ks: Sequence[int] = DEFAULT_KS,
    config: PipelineConfig | None = None,
    reranker: Reranker | None = None,
    on_progress: Progress | None = None,
    skips: SkipLog | None = None,
) -> PipelineEvaluation:
    """Run every judged query through the stages and score each stage with ir-measures.

    ``reranker`` defaults to the client's; the rerank stage needs one. Queries that cannot
    be evaluated (empty or refused text, no relevant judgment) and judgments of unknown
    queries are skipped into ``skips`` (pass the log the files were loaded with, to list
    their skipped lines too); the result's ``input`` lists them per reason, with the
    judged documents the collection lacks (kept as relevant).
    """
    config = config or PipelineConfig()
    config.check()
    chosen = [stage for stage in STAGES if stage in stages]
    if not chosen:
        raise InvalidInputError(f"no stages to evaluate; choose from {', '.join(STAGES)}")
    reranker = reranker or hs.reranker
    if "rerank" in chosen and reranker is None:
        raise InvalidInputError(
            "the rerank stage needs a reranker: pass --reranker (a cross-encoder name or "
            "path), set HYBRIDSEARCH_RERANKER_MODEL, or leave rerank out of --stages"
        )
    target = hs.get_collection(collection)
    defaults = target.fusion_defaults
    method = config.fusion or defaults.fusion
    rrf_k = defaults.rrf_k if config.rrf_k is None else config.rrf_k
    vector_weight = defaults.vector_weight if config.vector_weight is None else config.vector_weight
    keyword_weight = (
        defaults.keyword_weight if config.keyword_weight is None else config.keyword_weight
    )
    depth = config.top_k if config.rerank_depth is None else config.rerank_depth
    log = skips if skips is not None else SkipLog()
    judged, judged_qrels, skipped = judged_queries(
        queries, qrels, log, max_query_chars=hs.settings.max_query_chars
    )
    missing = missing_documents(hs, target, judged_qrels)
    embedder = hs.embedder(target)
    branches: tuple[Mode, ...] = tuple(m for m in ("vector", "keyword") if m in chosen)
    needs_fused = "hybrid" in chosen or "rerank" in chosen

    rankings: dict[str, Rankings] = {stage: {} for stage in chosen}
    timings: dict[str, float] = {}

    def took(key: str, since: float) -> None:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - since

    if chosen != ["keyword"]:
        embedder.load()  # model loading is not part of any stage's time
    if reranker is not None and "rerank" in chosen:
        reranker.load()
    started = time.perf_counter()
    for done, (qid, text) in enumerate(judged.items(), start=1):
        embedding = None
        fused: list[Hit] = []
        try:
            if chosen != ["keyword"]:
                t = time.perf_counter()
                embedding = embedder.embed_query(text)
                took("embed", t)
            for mode in branches:
                t = time.perf_counter()
                hits = branch_hits(hs, collection, text, mode, config.top_k, embedding)
                rankings[mode][qid] = document_ranking(h.document_id for h in hits)
                took(mode, t)
            if needs_fused:
                t = time.perf_counter()
                fused = hs.search(
                    collection,
                    text,
                    top_k=config.top_k,
                    top_n=1,
                    rerank=False,
                    fusion=method,
                    rrf_k=rrf_k,
                    vector_weight=vector_weight,
                    keyword_weight=keyword_weight,
                    query_embedding=embedding,
                ).candidates
                took("hybrid", t)
        except QueryError as exc:
            raise QueryError(f"query {qid}: {exc}") from None
        if "hybrid" in chosen:
            rankings["hybrid"][qid] = document_ranking(h.document_id for h in fused)
        if reranker is not None and "rerank" in chosen:
            t = time.perf_counter()
            head = fused[:depth]
            scores = combine_with_fused(
                reranker.score(text, [h.text for h in head]),
                [h.scores.fused for h in head],
                reranker.fused_weight(method),
            )
            ordered = rerank_order(fused, [float(s) for s in scores], config.top_n)
            rankings["rerank"][qid] = document_ranking(h.document_id for h in ordered)
            took("rerank", t)
        if on_progress is not None:
            on_progress(done, len(judged))
    timings["total"] = time.perf_counter() - started

    evaluator = Evaluator(judged_qrels, metric_names(ks))
    return PipelineEvaluation(
        queries=len(judged),
        skipped=skipped,
        ks=tuple(sorted(set(ks))),
        stages={stage: evaluator.mean(to_run(rankings[stage])) for stage in chosen},
        rankings=rankings,
        config={
            "collection": collection,
            **asdict(config),
            "rerank_depth": depth if "rerank" in chosen else None,
            "fusion": method,
            "rrf_k": rrf_k,
            "vector_weight": vector_weight,
            "keyword_weight": keyword_weight,
            "weights_from": weights_source(config, target),
            "reranker": reranker.model_id if reranker is not None and "rerank" in chosen else None,
        },
        timings_s={key: round(value, 3) for key, value in timings.items()},
        input=InputReport.build(log, missing),
    )
