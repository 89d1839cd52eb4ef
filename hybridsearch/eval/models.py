"""Evaluate the models on their own, without a collection.

* Embedding model: STS, the Spearman correlation between the cosine similarity of two
  sentences' embeddings and human similarity scores.
* Reranker: rescore a fixed candidate list per query (a TREC run, e.g. from
  ``hybridsearch eval --run-out``) and compare metrics before and after, plus pairwise
  accuracy.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from hybridsearch.errors import InvalidInputError
from hybridsearch.eval.beir import (
    InputReport,
    Qrels,
    judged_queries,
    relevant_documents,
    require_file,
)
from hybridsearch.eval.metrics import DEFAULT_KS, Evaluator, metric_names
from hybridsearch.eval.optional import import_eval_dependency
from hybridsearch.eval.runs import Rankings, to_run
from hybridsearch.loaders import SkipLog
from hybridsearch.models.embedder import Embedder

# -- embedding model: STS ---------------------------------------------------------------------


@dataclass(frozen=True)
class StsPair:
    first: str
    second: str
    score: float


@dataclass(frozen=True)
class StsEvaluation:
    pairs: int
    spearman: float
    pearson: float

    def to_dict(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "spearman": self.spearman, "pearson": self.pearson}


def load_sts_pairs(path: Path) -> list[StsPair]:
    """``sentence1 <TAB> sentence2 <TAB> score`` lines; a header row is skipped."""
    pairs: list[StsPair] = []
    with require_file(path, "STS pairs").open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)):
            if not row or not "".join(row).strip():
                continue
            try:
                first, second, score = row
                pairs.append(StsPair(first, second, float(score)))
            except ValueError:
                if number == 0:
                    continue  # header
                raise InvalidInputError(
                    f"{path}:{number + 1}: expected sentence1, sentence2 and a numeric score "
                    "separated by tabs"
                ) from None
    return pairs


def evaluate_sts(embedder: Embedder, pairs: Sequence[StsPair]) -> StsEvaluation:
    """Correlation of the embeddings' cosine similarity with the human scores.

    Both sentences are embedded as documents (no query prompt): STS is symmetric.
    """
    stats = import_eval_dependency("scipy.stats", "STS evaluation")
    scores = np.array([p.score for p in pairs], dtype=np.float64)
    if len(pairs) < 3 or np.ptp(scores) == 0:
        raise InvalidInputError(
            f"STS needs at least 3 pairs with differing scores, got {len(pairs)}"
        )
    first = embedder.embed_documents([p.first for p in pairs]).astype(np.float64)
    second = embedder.embed_documents([p.second for p in pairs]).astype(np.float64)
    norms = np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)
    cosine = np.einsum("ij,ij->i", first, second) / np.maximum(norms, 1e-12)
    return StsEvaluation(
        pairs=len(pairs),
        spearman=float(stats.spearmanr(cosine, scores).statistic),
        pearson=float(stats.pearsonr(cosine, scores).statistic),
    )


# -- reranker ------------------------------------------------------------------------------


class Scorer(Protocol):
    """What is evaluated: :class:`~hybridsearch.models.reranker.Reranker` or anything that
    scores passages against a query the same way (higher is more relevant)."""

    def score(self, query: str, passages: Sequence[str]) -> npt.NDArray[np.float32]: ...


@dataclass(frozen=True)
class RerankerEvaluation:
    """Metrics of the candidate order and of the reranked order, and pairwise accuracy.

    ``pairwise_accuracy`` is over every (relevant, non-relevant) pair of candidates of a
    query, pooled across queries: the share the reranker scores relevant-first (ties
    count half). Unjudged candidates count as non-relevant. None when there is no such pair.
    ``skipped`` counts the queries without a relevant judgment; ``input`` lists everything
    left out of the input, and the judged documents the corpus lacks.
    """

    queries: int
    skipped: int
    pairs: int
    pairwise_accuracy: float | None
    candidates: dict[str, float]
    reranked: dict[str, float]
    input: InputReport = field(default_factory=InputReport)

    def to_dict(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "skipped": self.skipped,
            "pairs": self.pairs,
            "pairwise_accuracy": self.pairwise_accuracy,
            "stages": {"candidates": self.candidates, "reranked": self.reranked},
            "input": self.input.to_dict(),
        }


def evaluate_reranker(
    reranker: Scorer,
    queries: Mapping[str, str],
    corpus: Mapping[str, str],
    qrels: Qrels,
    candidates: Mapping[str, Sequence[str]],
    *,
    depth: int = 100,
    ks: Sequence[int] = DEFAULT_KS,
    skips: SkipLog | None = None,
) -> RerankerEvaluation:
    """Rerank the first ``depth`` candidates of each judged query by the reranker's score.

    Queries that cannot be evaluated (empty text, no relevant judgment) are skipped into
    ``skips`` and listed in the result's ``input`` with the judged-relevant documents the
    corpus lacks (kept as relevant); a judged query without candidates scores 0 in both
    orders.
    """
    if depth < 1:
        raise InvalidInputError(f"depth must be positive, got {depth}")
    log = skips if skips is not None else SkipLog()
    judged, judged_qrels, skipped = judged_queries(queries, qrels, log)
    absent = [doc for doc in relevant_documents(judged_qrels) if doc not in corpus]
    before: Rankings = {}
    after: Rankings = {}
    correct = 0.0
    pairs = 0
    for qid, query in judged.items():
        docs = list(dict.fromkeys(candidates.get(qid, [])))[:depth]
        missing = [doc for doc in docs if doc not in corpus]
        if missing:
            raise InvalidInputError(
                f"query {qid}: candidate document {missing[0]!r} is not in the corpus; "
                "pass the corpus the candidates were retrieved from"
            )
        scores = reranker.score(query, [corpus[doc] for doc in docs]).astype(np.float64)
        order = sorted(range(len(docs)), key=lambda i: (-scores[i], i))
        before[qid] = docs
        after[qid] = [docs[i] for i in order]
        relevant = np.array([judged_qrels[qid].get(doc, 0) > 0 for doc in docs], dtype=bool)
        pos, neg = scores[relevant], scores[~relevant]
        if pos.size and neg.size:
            diff = pos[:, None] - neg[None, :]
            correct += float((diff > 0).sum() + 0.5 * (diff == 0).sum())
            pairs += diff.size
    evaluator = Evaluator(judged_qrels, metric_names(ks))
    return RerankerEvaluation(
        queries=len(judged),
        skipped=skipped,
        pairs=pairs,
        pairwise_accuracy=correct / pairs if pairs else None,
        candidates=evaluator.mean(to_run(before)),
        reranked=evaluator.mean(to_run(after)),
        input=InputReport.build(log, absent),
    )
