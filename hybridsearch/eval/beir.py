"""Read BEIR-format evaluation data: queries.jsonl and qrels/<split>.tsv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from hybridsearch.errors import InvalidInputError

Qrels = dict[str, dict[str, int]]


def load_queries(path: Path) -> dict[str, str]:
    """``{query_id: text}`` from a BEIR queries.jsonl."""
    queries: dict[str, str] = {}
    with path.open(encoding="utf-8") as lines:
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
    with path.open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t")
        for number, row in enumerate(rows, start=1):
            if number == 1 and row and not row[-1].lstrip("-").isdigit():
                continue  # header
            if len(row) < 3:
                raise InvalidInputError(f"{path}:{number}: expected query-id, corpus-id, score")
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return qrels
