"""Ranking metrics with trec_eval semantics, computed by ir-measures.

Metrics are named ``family@k``: ``ndcg@10``, ``recall@100``, ``mrr@10``, ``map@100``,
``precision@5`` and ``hit@5``; nothing here re-implements one. ir-measures computes them
with pytrec_eval (trec_eval's own code; ``hit`` is its ``success``), except ``mrr@k``:
trec_eval's ``recip_rank`` has no cutoff, so ir-measures uses the MS MARCO evaluation
script's MRR@k. Figures are means over every judged query, a query with an empty ranking
counting as 0 (trec_eval's ``-c``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from hybridsearch.errors import InvalidInputError

Qrels = Mapping[str, Mapping[str, int]]
#: ``{query_id: {document_id: score}}``; a higher score ranks first.
Run = dict[str, dict[str, float]]

#: Our metric families and the ir-measures (trec_eval) measure computing each.
FAMILIES: dict[str, str] = {
    "ndcg": "nDCG",
    "recall": "R",
    "mrr": "RR",
    "map": "AP",
    "precision": "P",
    "hit": "Success",
}
DEFAULT_KS: tuple[int, ...] = (1, 3, 5, 10, 20, 50, 100)


def parse_ks(text: str) -> tuple[int, ...]:
    """Cutoffs from ``"1,3,5,10"``: positive integers, returned sorted and without repeats."""
    ks: set[int] = set()
    for part in text.split(","):
        item = part.strip()
        if not item.isdigit() or int(item) < 1:
            raise InvalidInputError(
                f"invalid cutoff {item!r} in {text!r}: pass positive integers separated by "
                "commas, e.g. 1,3,5,10"
            )
        ks.add(int(item))
    return tuple(sorted(ks))


def metric_names(ks: Iterable[int], families: Iterable[str] = FAMILIES) -> list[str]:
    """``family@k`` for each family (in the order given), each k ascending."""
    cutoffs = sorted(set(ks))
    return [f"{family}@{k}" for family in families for k in cutoffs]


def parse_metric(name: str) -> tuple[str, int]:
    """``"ndcg@10"`` -> ``("ndcg", 10)``, or an InvalidInputError naming the known families."""
    family, _, cutoff = name.partition("@")
    if family not in FAMILIES or not cutoff.isdigit() or int(cutoff) < 1:
        raise InvalidInputError(
            f"unknown metric {name!r}: use family@k with family one of "
            f"{', '.join(FAMILIES)} and k a positive integer, e.g. ndcg@10"
        )
    return family, int(cutoff)


class Evaluator:
    """Scores runs against one set of judgments; build once, call :meth:`mean` per run.

    ``qrels`` should hold only the queries to average over: each of them counts, whether
    the run ranks anything for it or not.
    """

    def __init__(self, qrels: Qrels, names: Sequence[str]) -> None:
        import ir_measures  # here, not at import time: the CLI builds its parser without it

        self.names = list(names)
        if not self.names:
            raise InvalidInputError("no metrics to compute; give at least one cutoff k")
        measures = []
        for name in self.names:
            family, k = parse_metric(name)
            measures.append(ir_measures.parse_measure(f"{FAMILIES[family]}@{k}"))
        self._measures = dict(zip(self.names, measures, strict=True))
        self._qids = list(qrels)
        judgments = {qid: dict(docs) for qid, docs in qrels.items()}
        self._evaluator = ir_measures.evaluator(measures, judgments)

    def mean(self, run: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
        """``{name: mean over the judged queries}`` for ``run``."""
        complete = {qid: dict(run.get(qid, {})) for qid in self._qids}
        aggregate = self._evaluator.calc_aggregate(complete)
        return {name: float(aggregate[measure]) for name, measure in self._measures.items()}


def evaluate(
    qrels: Qrels, run: Mapping[str, Mapping[str, float]], names: Sequence[str]
) -> dict[str, float]:
    """``{name: mean over the queries in qrels}`` for one run (see :class:`Evaluator`)."""
    return Evaluator(qrels, names).mean(run)
