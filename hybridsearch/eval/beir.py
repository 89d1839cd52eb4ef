"""Read BEIR-format evaluation data: queries.jsonl and qrels/<split>.tsv."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from hybridsearch.errors import InvalidInputError

Qrels = dict[str, dict[str, int]]


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else an InvalidInputError naming what was expected there."""
    if not path.is_file():
        raise InvalidInputError(f"{what} file {path} does not exist")
    return path


def load_queries(path: Path) -> dict[str, str]:
    """``{query_id: text}`` from a BEIR queries.jsonl."""
    queries: dict[str, str] = {}
    with require_file(path, "queries").open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                queries[str(record["_id"])] = str(record["text"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InvalidInputError(
                    f"{path}:{number}: expected JSON with _id and text"
                ) from None
    return queries


def load_qrels(path: Path) -> Qrels:
    """``{query_id: {doc_id: relevance}}`` from a BEIR qrels TSV (with a header row)."""
    qrels: Qrels = {}
    with require_file(path, "qrels").open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t")
        for number, row in enumerate(rows, start=1):
            if number == 1 and row and not row[-1].lstrip("-").isdigit():
                continue  # header
            if len(row) < 3 or not row[2].strip().lstrip("-").isdigit():
                raise InvalidInputError(
                    f"{path}:{number}: expected query-id, corpus-id, integer score"
                )
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return qrels


def load_corpus(path: Path) -> dict[str, str]:
    """``{doc_id: "title text"}`` from a BEIR corpus.jsonl (for pair building, not ingest)."""
    corpus: dict[str, str] = {}
    with require_file(path, "corpus").open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                title = str(record.get("title") or "")
                corpus[str(record["_id"])] = f"{title} {record.get('text') or ''}".strip()
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InvalidInputError(
                    f"{path}:{number}: expected JSON with _id and text"
                ) from None
    return corpus


def training_pairs(
    corpus: dict[str, str],
    queries: dict[str, str],
    qrels: Qrels,
    *,
    limit_queries: int | None = None,
    negatives_per_query: int = 3,
    seed: int = 0,
) -> list[tuple[str, str, float]]:
    """Labelled (query, passage, 1.0/0.0) pairs for fine-tuning a cross-encoder.

    Every judged relevant document is a positive; each query also gets
    ``negatives_per_query`` random unjudged documents as negatives. Queries are taken in
    qrels order, the first ``limit_queries`` of them, so later ones stay held out.
    """
    rng = random.Random(seed)
    doc_ids = sorted(corpus)
    judged = [q for q in qrels if q in queries and any(d in corpus for d in qrels[q])]
    pairs: list[tuple[str, str, float]] = []
    for qid in judged[:limit_queries]:
        relevant = {d for d, rel in qrels[qid].items() if rel > 0 and d in corpus}
        pairs.extend((queries[qid], corpus[d], 1.0) for d in sorted(relevant))
        negatives: set[str] = set()
        while len(negatives) < min(negatives_per_query, len(doc_ids) - len(relevant)):
            candidate = rng.choice(doc_ids)
            if candidate not in relevant:
                negatives.add(candidate)
        pairs.extend((queries[qid], corpus[d], 0.0) for d in sorted(negatives))
    rng.shuffle(pairs)
    return pairs


def judged_queries(queries: dict[str, str], qrels: Qrels) -> tuple[dict[str, str], Qrels, int]:
    """The queries with at least one relevant judgment, their qrels, and how many were skipped.

    A query without a relevant document has no defined nDCG, recall or MRR, so it is left
    out and counted instead; judgments for queries not in ``queries`` are ignored.
    """
    judged = {
        qid: text
        for qid, text in queries.items()
        if any(rel > 0 for rel in qrels.get(qid, {}).values())
    }
    if not judged:
        raise InvalidInputError(
            f"none of the {len(queries)} queries has a relevant judgment in the qrels; "
            "check that the queries and qrels files belong together"
        )
    return judged, {qid: qrels[qid] for qid in judged}, len(queries) - len(judged)
