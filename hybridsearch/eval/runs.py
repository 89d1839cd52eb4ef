"""Document-level rankings, and reading and writing them as TREC run files.

Search ranks chunks; judgments are about documents. A document takes the place of its
best chunk (its first appearance in the ranked chunk list), so a ranking is a list of
document ids, best first.

A document's score is derived from that rank (``n - rank + 1`` for n documents), so
scores are strictly decreasing: trec_eval and pytrec_eval order a run by score and break
ties by document id, and raw stage scores (equal fused scores are common under RRF, and a
reranked head sits above a fused tail) would let them reorder our results.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from hybridsearch.errors import InvalidInputError
from hybridsearch.eval.metrics import Run
from hybridsearch.search import rerank_order as rerank_order  # one rule, search's; re-exported

#: ``{query_id: [document_id, ...]}``, best first.
Rankings = dict[str, list[str]]


def document_ranking(document_ids: Iterable[str]) -> list[str]:
    """Document ids in order of first appearance (the best chunk represents a document)."""
    return list(dict.fromkeys(document_ids))


def to_run(rankings: Mapping[str, Sequence[str]]) -> Run:
    """Rankings as ``{query_id: {document_id: n - rank + 1}}`` (strictly decreasing)."""
    return {
        qid: {doc: float(len(docs) - position) for position, doc in enumerate(docs)}
        for qid, docs in rankings.items()
    }


def write_trec(path: Path, rankings: Mapping[str, Sequence[str]], tag: str) -> None:
    """Write ``qid Q0 docid rank score tag`` lines, queries in the order given."""
    if not tag or any(ch.isspace() for ch in tag):
        raise InvalidInputError(f"run tag must be one word, got {tag!r}")
    with path.open("w", encoding="utf-8") as out:
        for qid, docs in rankings.items():
            for rank, doc in enumerate(docs, start=1):
                out.write(f"{qid} Q0 {doc} {rank} {len(docs) - rank + 1} {tag}\n")


def read_trec(path: Path) -> Rankings:
    """Rankings from a TREC run file, each query ordered as trec_eval orders it.

    trec_eval ignores the rank column: it sorts by score, highest first, and breaks ties by
    document id, highest first. A document listed twice for one query keeps its first line.
    """
    if not path.is_file():
        raise InvalidInputError(f"run file {path} does not exist")
    scored: dict[str, dict[str, float]] = {}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                qid, _, doc, _, score = fields[:5]
                value = float(score)
            except ValueError:
                raise InvalidInputError(
                    f"{path}:{number}: expected 'qid Q0 docid rank score tag'"
                ) from None
            scored.setdefault(qid, {}).setdefault(doc, value)
    return {
        qid: sorted(docs, key=lambda d: (docs[d], d), reverse=True) for qid, docs in scored.items()
    }
