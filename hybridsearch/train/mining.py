"""Training examples mined from a collection's own fused candidates.

Every query runs through :meth:`HybridSearch.search` with ``rerank=False``, the code path a
user's search takes, so the reranker learns to reorder exactly the candidate lists it will
see. A judged-relevant document gives a positive: its best-ranked chunk among the
candidates, the chunk that represents the document in a ranking (:mod:`hybridsearch.eval.runs`)
and the one most likely to hold the evidence the judgment is about (another chunk of the
same abstract, or a long document's unrelated section, would teach noise). A relevant
document that retrieval did not bring back is no positive: the reranker never sees it.
Negatives are chunks of unjudged documents from the head of the same list: the hard
negatives the reranker has to push down, not random documents it would never meet.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from hybridsearch.client import HybridSearch
from hybridsearch.eval.beir import Qrels
from hybridsearch.models.training import RankingGroup
from hybridsearch.search import Hit


@dataclass(frozen=True)
class Candidate:
    """One fused candidate as training sees it."""

    document_id: str
    text: str
    #: the fused score search gave it (the rerank score's second input; see calibration)
    fused: float


#: ``{query_id: fused candidates, best first}``
CandidateLists = dict[str, list[Candidate]]


def mine_candidates(
    hs: HybridSearch,
    collection: str,
    queries: Mapping[str, str],
    top_k: int,
    on_progress: Callable[[int, int], None] | None = None,
) -> CandidateLists:
    """Each query's fused TopK (no reranking), with the collection's own fusion defaults."""
    lists: CandidateLists = {}
    for done, (qid, text) in enumerate(queries.items(), start=1):
        hits: list[Hit] = hs.search(collection, text, top_k=top_k, top_n=1, rerank=False).candidates
        lists[qid] = [Candidate(h.document_id, h.text, h.scores.fused) for h in hits]
        if on_progress is not None:
            on_progress(done, len(queries))
    return lists


def relevant(qrels: Qrels, qid: str) -> set[str]:
    return {doc for doc, grade in qrels.get(qid, {}).items() if grade > 0}


def positives(candidates: Sequence[Candidate], wanted: set[str]) -> list[Candidate]:
    """The best-ranked chunk of each relevant document among ``candidates``."""
    seen: set[str] = set()
    found: list[Candidate] = []
    for candidate in candidates:
        if candidate.document_id in wanted and candidate.document_id not in seen:
            seen.add(candidate.document_id)
            found.append(candidate)
    return found


def ranking_groups(
    queries: Mapping[str, str],
    qrels: Qrels,
    lists: CandidateLists,
    *,
    negatives: int,
    depth: int,
    seed: int,
) -> list[RankingGroup]:
    """One group per (query, retrieved relevant document): its positive chunk and
    ``negatives`` chunks of unjudged documents drawn from the list's first ``depth``.

    Queries whose head has fewer unjudged chunks than ``negatives`` give no group.
    """
    rng = random.Random(seed)
    groups: list[RankingGroup] = []
    for qid, text in queries.items():
        wanted = relevant(qrels, qid)
        head = lists.get(qid, [])[:depth]
        pool = [c.text for c in head if c.document_id not in wanted]
        if len(pool) < negatives:
            continue
        for positive in positives(lists.get(qid, []), wanted):
            groups.append((text, positive.text, rng.sample(pool, negatives)))
    rng.shuffle(groups)
    return groups
