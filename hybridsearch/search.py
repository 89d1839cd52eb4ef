"""Search: validate → embed the query → SQL candidates → rerank → snippets, with a report.

Arguments are validated in :mod:`hybridsearch.search_input`.

The candidates come from ``hybridsearch.search_hybrid`` (the same function a SQL user
calls). The reranker scores the first ``rerank_depth`` of the fused TopK (all of them by
default); those come first by its score, the rest follow in fused order, and TopN is
taken from that order. When it is missing or fails, the fused TopN comes back flagged
``reranked=False`` with a note saying why.

A search holds a pooled connection only while its SQL runs (``search`` in
:mod:`hybridsearch.aio`, from which :mod:`hybridsearch.client` is generated): one
checkout for the collection, one for the candidates, one for the snippets, and none
while the query is embedded or the candidates reranked, which take seconds on a CPU
where the SQL takes milliseconds. The snippets (``hybridsearch.highlight``) are made for
the TopN after reranking, in a checkout of their own, rather than for the whole TopK
together with the candidates: on SciFact chunks (5k of them) highlighting 50 candidates
took 14-17 ms, as long as fetching them, against 1.7 ms for 5 results plus 0.1 ms for
the extra checkout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np
from psycopg.types.json import Jsonb

from hybridsearch.collections import Collection
from hybridsearch.errors import InvalidInputError, ModelError
from hybridsearch.models.embedder import Embedder
from hybridsearch.models.reranker import Reranker, combine_with_fused, rerank_safely
from hybridsearch.search_input import Mode as Mode  # re-exported: the public name
from hybridsearch.search_input import SearchOptions

T = TypeVar("T")

# SQL run by hybridsearch.db.store (written once in store_async.py).
SET_STATEMENT_TIMEOUT_SQL = "SELECT set_config('statement_timeout', %s, true)"
# Each candidate's internal document key as well: an external id names a document only
# within its tenant, and a search without a tenant may return several tenants' documents.
SEARCH_HYBRID_SQL = (
    "SELECT h.*, c.document_id AS document_key FROM hybridsearch.search_hybrid("
    "%s, %s, %s, p_top_k => %s, p_filter => %s, p_fusion => %s,"
    " p_rrf_k => %s, p_vector_weight => %s, p_keyword_weight => %s) AS h"
    " JOIN hybridsearch.chunks AS c ON c.collection_id = %s AND c.chunk_id = h.chunk_id"
    " ORDER BY h.fused_rank"
)
HIGHLIGHT_SQL = (
    "SELECT hybridsearch.highlight(%s, t.content, %s)"
    " FROM unnest(%s::text[]) WITH ORDINALITY AS t(content, n) ORDER BY t.n"
)


@dataclass(frozen=True)
class Scores:
    """Every stage's view of one result; None where a stage did not see it."""

    vector_rank: int | None
    vector_distance: float | None
    keyword_rank: int | None
    keyword_score: float | None
    fused: float
    rerank: float | None = None


@dataclass(frozen=True)
class Hit:
    """One result: a chunk, its document's external id and how each stage scored it."""

    rank: int
    document_id: str
    chunk_id: int
    text: str
    metadata: dict[str, Any]
    scores: Scores
    snippet: str | None = None
    #: the document's internal key, which (unlike ``document_id``) tells apart two tenants'
    #: documents of the same id; None where a hit was made without it
    document_key: int | None = None


@dataclass(frozen=True)
class SearchResult:
    """The TopN, whether they were reranked (and if not, why), and per-stage timings.

    ``rerank_depth`` is how many of the fused candidates the reranker scored (the first
    ones; fewer than asked when fewer were found), None when it did not order them.
    """

    query: str
    results: list[Hit]
    reranked: bool
    timings_ms: dict[str, float]
    candidates: list[Hit] = field(default_factory=list)
    note: str | None = None
    rerank_depth: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON contract shared by the CLI's ``search --json`` and the HTTP API."""
        return {
            "query": self.query,
            "results": [
                {
                    "rank": h.rank,
                    "document_id": h.document_id,
                    "chunk_id": h.chunk_id,
                    "text": h.text,
                    "snippet": h.snippet,
                    "metadata": h.metadata,
                    "scores": {
                        "vector_rank": h.scores.vector_rank,
                        "vector_distance": h.scores.vector_distance,
                        "keyword_rank": h.scores.keyword_rank,
                        "keyword_score": h.scores.keyword_score,
                        "fused": h.scores.fused,
                        "rerank": h.scores.rerank,
                    },
                }
                for h in self.results
            ],
            "reranked": self.reranked,
            "rerank_depth": self.rerank_depth,
            "timings_ms": self.timings_ms,
        }


def hit_from_row(row: dict[str, Any]) -> Hit:
    return Hit(
        rank=row["fused_rank"],
        document_id=row["document_id"],
        chunk_id=row["chunk_id"],
        text=row["content"],
        metadata=row["metadata"],
        document_key=row["document_key"],
        scores=Scores(
            vector_rank=row["vector_rank"],
            vector_distance=row["vector_distance"],
            keyword_rank=row["keyword_rank"],
            keyword_score=row["keyword_score"],
            fused=row["fused_score"],
        ),
    )


def candidate_params(
    collection: Collection, options: SearchOptions, embedding: np.ndarray | None
) -> tuple[Any, ...]:
    """Parameters for :data:`SEARCH_HYBRID_SQL`."""
    return (
        collection.name,
        embedding,
        options.query if options.mode != "vector" else None,
        options.top_k,
        Jsonb(options.filter) if options.filter else None,
        options.fusion,
        options.rrf_k,
        options.vector_weight,
        options.keyword_weight,
        collection.collection_id,
    )


def rerank_order(fused: Sequence[T], scores: Sequence[float], top_n: int) -> list[T]:
    """The reranked TopN, then the rest of the fused list in fused order.

    ``scores`` are the reranker's scores for the head of ``fused`` (as deep as it reranked);
    the TopN are the best of them, ties kept in fused order. The one ordering rule of the
    rerank stage: search (:func:`rerank_candidates`, with ``top_n`` the depth) and
    evaluation (:mod:`hybridsearch.eval.runs`) both order by it.
    """
    if len(scores) > len(fused):
        raise InvalidInputError(f"{len(scores)} rerank scores for {len(fused)} candidates")
    top = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:top_n]
    chosen = set(top)
    return [fused[i] for i in top] + [item for i, item in enumerate(fused) if i not in chosen]


def rerank_depth(options: SearchOptions, candidates: int) -> int:
    """How many of ``candidates`` fused candidates, from the top, the reranker scores."""
    if options.rerank_depth is None:
        return candidates
    return min(options.rerank_depth, candidates)


def distinct_documents(hits: Sequence[Hit]) -> list[Hit]:
    """The first hit of each document, in order: one chunk per document (its best). A
    document is its internal key where the hit has one (two tenants may share an id)."""
    seen: set[int | str] = set()
    kept: list[Hit] = []
    for hit in hits:
        key = hit.document_key if hit.document_key is not None else hit.document_id
        if key not in seen:
            seen.add(key)
            kept.append(hit)
    return kept


def top_n(ranked: Sequence[Hit], options: SearchOptions) -> list[Hit]:
    """The first ``top_n`` of ``ranked``, one chunk per document where the options ask,
    numbered 1, 2, ... in that order."""
    kept = distinct_documents(ranked) if options.one_per_document else list(ranked)
    return [replace(hit, rank=rank) for rank, hit in enumerate(kept[: options.top_n], start=1)]


def _reorder(candidates: list[Hit], scores: list[float], options: SearchOptions) -> list[Hit]:
    """The candidates the reranker scored (the first ``len(scores)``) by its score, ties in
    fused order, then the rest in fused order; their TopN, renumbered."""
    order = rerank_order(range(len(candidates)), scores, len(scores))
    ranked = [
        replace(
            candidates[i],
            scores=replace(candidates[i].scores, rerank=scores[i] if i < len(scores) else None),
        )
        for i in order
    ]
    return top_n(ranked, options)


def rerank_candidates(
    candidates: list[Hit],
    options: SearchOptions,
    reranker: Reranker | None,
    rerank: bool,
    timeout_s: float | None = None,
) -> tuple[list[Hit], int | None, str | None]:
    """The TopN; how many candidates the reranker scored (None when it did not order
    them), and a note when it did not.

    The reranker scores the first :func:`rerank_depth` candidates; the TopN are those by
    its score, then the candidates below the depth in fused order (one chunk per document
    where the options ask: :func:`top_n`).
    """
    if not rerank:
        note = "reranking turned off for this search; results are in fused order"
        return top_n(candidates, options), None, note
    if not candidates:
        return [], None, None
    head = candidates[: rerank_depth(options, len(candidates))]
    outcome = rerank_safely(reranker, options.query, [h.text for h in head], timeout_s=timeout_s)
    if outcome.scores is None:
        return top_n(candidates, options), None, outcome.note
    # a model from `train reranker` weighs the fused score in (hybrid searches only)
    weight = reranker.fused_weight(options.fusion) if reranker and options.mode == "hybrid" else 0
    scores = combine_with_fused(outcome.scores, [h.scores.fused for h in head], weight)
    top = _reorder(candidates, [float(s) for s in scores], options)
    return top, len(head), outcome.note


def highlight_params(collection: Collection, query: str, hits: list[Hit]) -> tuple[Any, ...]:
    """Parameters for :data:`HIGHLIGHT_SQL`."""
    return (collection.analyzer, query, [h.text for h in hits])


def with_snippets(hits: list[Hit], rows: list[tuple[Any, ...]]) -> list[Hit]:
    return [replace(hit, snippet=row[0]) for hit, row in zip(hits, rows, strict=True)]


class StageTimer:
    """Milliseconds per search stage, and the total since the timer was made."""

    def __init__(self) -> None:
        self._started = time.perf_counter()
        self._ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self._ms[name] = (time.perf_counter() - started) * 1000

    def report(self) -> dict[str, float]:
        """Each stage and the total, rounded to microseconds."""
        total = (time.perf_counter() - self._started) * 1000
        return {key: round(value, 3) for key, value in {**self._ms, "total": total}.items()}


def search_result(
    options: SearchOptions,
    candidates: list[Hit],
    top: list[Hit],
    depth: int | None,
    note: str | None,
    timer: StageTimer,
) -> SearchResult:
    """The report of a finished search (sync and async clients alike); ``depth`` as
    :func:`rerank_candidates` returns it."""
    return SearchResult(
        query=options.query,
        results=top,
        reranked=depth is not None,
        timings_ms=timer.report(),
        candidates=candidates,
        note=note,
        rerank_depth=depth,
    )


def models_to_load(
    options: SearchOptions,
    embedder: Embedder,
    query_embedding: np.ndarray | None,
    reranker: Reranker | None,
    rerank: bool,
) -> list[Embedder | Reranker]:
    """The models this search will run that are not loaded yet. Their load (seconds, once
    per process) is reported as its own stage, "load", ahead of "embed"."""
    pending: list[Embedder | Reranker] = []
    if options.mode != "keyword" and query_embedding is None and not embedder.loaded:
        pending.append(embedder)
    if rerank and reranker is not None and not reranker.loaded and reranker.load_error is None:
        pending.append(reranker)
    return pending


def load_models(models: Sequence[Embedder | Reranker]) -> None:
    """Load ``models`` side by side: reading weights, hashing them for the ONNX cache and
    building ONNX Runtime sessions mostly run outside the GIL, so a one-shot search loads
    its embedder and reranker in about the time of the slower one. An embedder that fails
    raises; a reranker that fails is left for the rerank stage, which reports its
    remembered error and keeps the fused order."""
    if len(models) == 1:
        _load_one(models[0])
        return
    with ThreadPoolExecutor(len(models), thread_name_prefix="hybridsearch-load") as pool:
        futures = [pool.submit(_load_one, model) for model in models]
    for future in futures:
        future.result()


def _load_one(model: Embedder | Reranker) -> None:
    if isinstance(model, Embedder):
        model.load()
        return
    # A reranker remembers its load error; rerank_safely turns it into the search's note.
    with suppress(ModelError):
        model.load()
