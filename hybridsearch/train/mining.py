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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from hybridsearch.client import HybridSearch
from hybridsearch.errors import InvalidInputError
from hybridsearch.eval.beir import Qrels, judged_queries
from hybridsearch.loaders import SkipLog
from hybridsearch.models.training import RankingGroup
from hybridsearch.search import Hit
from hybridsearch.train.recipes import Progress


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


def split_queries(
    queries: Mapping[str, str], held_out: int, seed: int
) -> tuple[dict[str, str], dict[str, str]]:
    """(train, validation) by query id: a seeded shuffle, the first ``held_out`` validate."""
    ids = sorted(queries)
    if len(ids) <= held_out:
        raise InvalidInputError(
            f"{len(ids)} judged queries cannot hold out {held_out} for validation and still "
            "train: lower --validation-queries or give more judged queries"
        )
    random.Random(seed).shuffle(ids)
    chosen = set(ids[:held_out])
    train = {q: t for q, t in queries.items() if q not in chosen}
    return train, {q: t for q, t in queries.items() if q in chosen}


@dataclass(frozen=True)
class MinedExamples:
    """What a training run learns from and is validated on."""

    #: the judgments of the queries that were usable (see ``judged_queries``)
    qrels: Qrels
    train: dict[str, str]
    held_out: dict[str, str]
    #: every usable query's fused candidates, the held-out ones' included
    lists: CandidateLists
    #: the training queries' (query, positive, hard negatives) examples
    groups: list[RankingGroup]
    mine_s: float


def mine_examples(
    hs: HybridSearch,
    collection: str,
    queries: Mapping[str, str],
    qrels: Qrels,
    *,
    validation_queries: int,
    top_k: int,
    negatives: int,
    negative_depth: int,
    seed: int,
    log: SkipLog,
    on_progress: Progress | None = None,
) -> MinedExamples:
    """Split the judged queries (:func:`split_queries`), mine every one's fused TopK and
    draw the training queries' examples (:func:`ranking_groups`); an InvalidInputError
    when the search finds none of the judged documents of the training queries."""
    judged, judged_qrels, _ = judged_queries(
        queries, qrels, log, max_query_chars=hs.settings.max_query_chars
    )
    hs.get_collection(collection)  # a missing collection fails before any work
    train, held_out = split_queries(judged, validation_queries, seed)
    started = time.perf_counter()
    progress = on_progress
    lists = mine_candidates(
        hs,
        collection,
        judged,
        top_k,
        None if progress is None else lambda done, total: progress("mine", done, total),
    )
    mine_s = time.perf_counter() - started
    groups = ranking_groups(
        train, judged_qrels, lists, negatives=negatives, depth=negative_depth, seed=seed
    )
    if not groups:
        raise InvalidInputError(
            "no training examples: the search found none of the judged documents for the "
            "training queries; check that the qrels belong to this collection"
        )
    return MinedExamples(judged_qrels, train, held_out, lists, groups, mine_s)
