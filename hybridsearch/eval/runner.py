"""Score retrieval modes on judged queries, at document level.

A document's score in a run is its best chunk's score (its first appearance in the
ranked chunk list). Metrics come from ir-measures (trec_eval semantics).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import ir_measures

from hybridsearch.client import HybridSearch
from hybridsearch.eval.beir import Qrels
from hybridsearch.search import Hit, Mode

Run = dict[str, dict[str, float]]


def document_run(hits: Sequence[Hit]) -> dict[str, float]:
    """Collapse ranked chunks to ranked documents (best chunk wins), scored by rank."""
    run: dict[str, float] = {}
    for position, hit in enumerate(hits):
        run.setdefault(hit.document_id, float(len(hits) - position))
    return run


@dataclass(frozen=True)
class ModeScores:
    mode: str
    measures: dict[str, float]


def evaluate_modes(
    hs: HybridSearch,
    collection: str,
    queries: dict[str, str],
    qrels: Qrels,
    *,
    modes: Iterable[Mode] = ("vector", "keyword", "hybrid"),
    top_k: int = 100,
    measures: Sequence[str] = ("nDCG@10", "R@100", "RR@10"),
) -> list[ModeScores]:
    """Fused-candidate (pre-rerank) quality of each mode on the judged queries."""
    judged = {qid: text for qid, text in queries.items() if qid in qrels}
    parsed = [ir_measures.parse_measure(m) for m in measures]
    results = []
    for mode in modes:
        run: Run = {}
        for qid, text in judged.items():
            result = hs.search(collection, text, top_k=top_k, top_n=1, mode=mode, rerank=False)
            run[qid] = document_run(result.candidates)
        aggregate = ir_measures.calc_aggregate(parsed, qrels, run)
        results.append(ModeScores(mode, {str(m): float(aggregate[m]) for m in parsed}))
    return results
