"""Read BEIR-format evaluation data: queries.jsonl and qrels/<split>.tsv.

Real files are not clean, and one bad line must not cost a whole evaluation. What cannot
be used is skipped and recorded in a :class:`~hybridsearch.loaders.SkipLog` (the one
``hybridsearch ingest`` uses), which the reports list per reason with a count and the
first few places; without a log, the first problem raises, as a strict ingest does.

* queries.jsonl: a line that is not UTF-8, not JSON, or not an object with an ``_id``
  (string or number) and a string ``text`` is skipped; a repeated id keeps its first line.
* qrels TSV: a line without exactly three tab-separated columns, with an empty id or a
  score that is not an integer is skipped; a repeated (query, document) pair keeps its
  first line. A first line whose score column is not a number is the header.
* :func:`judged_queries`, when queries meet judgments: a query with empty or
  whitespace-only text, or text that search refuses, is skipped; judgments for a query
  that is not in the queries file are skipped; a query with no relevant judgment is not
  evaluated (it has no defined nDCG, recall or MRR), as BEIR does, and counted.
* Judged-relevant documents that are not in the collection (or corpus) are *kept*: a
  document missing from the collection is a real recall failure (an ingest that skipped it,
  a stale collection), and dropping its judgments would hide it behind better figures.
  They are counted and listed, next to the skips (:class:`InputReport`).

A file with nothing usable left raises an InvalidInputError that says what was wrong.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from hybridsearch.errors import InvalidInputError, QueryError
from hybridsearch.loaders import SkipGroup, SkipLog, Skipped
from hybridsearch.search_input import validate_query

Qrels = dict[str, dict[str, int]]

#: How many places each skip reason lists in a report.
EXAMPLES = 5

# Skip reasons: fixed texts, so that a report groups the skips by them.
NOT_UTF8 = "line is not UTF-8 text"
NOT_JSON = "queries line is not valid JSON"
NOT_QUERY = "queries line is not a JSON object with an _id and a string text"
DUPLICATE_QUERY = "duplicate query id (the first is kept)"
NOT_THREE_COLUMNS = "qrels line does not have 3 tab-separated columns (query-id, corpus-id, score)"
EMPTY_ID = "qrels line has an empty query-id or corpus-id"
NOT_INTEGER = "qrels score is not an integer"
DUPLICATE_JUDGMENT = "duplicate judgment of a (query, document) pair (the first is kept)"
EMPTY_QUERY = "query text is empty or whitespace only"
REFUSED_QUERY = "query text that search refuses"
UNKNOWN_QUERY = "judgments for a query that is not in the queries file"
UNJUDGED = "query has no relevant judgment (not evaluated, as in BEIR)"


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else an InvalidInputError naming what was expected there."""
    if not path.is_file():
        raise InvalidInputError(f"{what} file {path} does not exist")
    return path


def describe(groups: Iterable[SkipGroup]) -> str:
    """Skip groups in one line, for an error message: ``3 × reason (first places); …``."""
    return "; ".join(f"{g.count} × {g.reason} ({places(g)})" for g in groups)


def places(group: SkipGroup) -> str:
    """A group's first places, comma-separated, with an ellipsis when there are more."""
    return first_few(group.examples, group.count)


def first_few(examples: Sequence[str], count: int) -> str:
    """The first of ``count`` items, comma-separated, with an ellipsis when there are more."""
    return ", ".join(examples) + (", …" if count > len(examples) else "")


def _nothing_usable(path: Path, what: str, log: SkipLog, since: int, expected: str) -> NoReturn:
    """The InvalidInputError for a file that yielded nothing: what was skipped, or empty."""
    skipped = SkipLog(skipped=log.skipped[since:]).summary(EXAMPLES)
    if skipped:
        raise InvalidInputError(f"{path}: no usable {what}; skipped {describe(skipped)}")
    raise InvalidInputError(f"{path} holds no {what}; expected {expected}")


def json_lines(path: Path, what: str, log: SkipLog, not_json: str) -> Iterator[tuple[str, Any]]:
    """(``path:line``, the line's JSON value) for each non-blank line of ``path``, a
    ``what`` file; a line that is not UTF-8 (:data:`NOT_UTF8`) or not JSON (``not_json``)
    is skipped into ``log``."""
    with require_file(path, what).open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                log.skip(where, NOT_UTF8)
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.skip(where, not_json)
                continue
            yield where, record


def load_queries(path: Path, log: SkipLog | None = None) -> dict[str, str]:
    """``{query_id: text}`` from a BEIR queries.jsonl, in file order.

    Bad lines and repeated ids are skipped into ``log`` (see the module's notes); without a
    log the first one raises. Empty text is kept here: :func:`judged_queries` skips it, for
    queries from any source. Blank lines are ignored.
    """
    log = log if log is not None else SkipLog(strict=True)
    since = len(log.skipped)
    queries: dict[str, str] = {}
    for where, record in json_lines(path, "queries", log, NOT_JSON):
        qid = record.get("_id") if isinstance(record, dict) else None
        text = record.get("text") if isinstance(record, dict) else None
        if not _is_id(qid) or not isinstance(text, str):
            log.skip(where, NOT_QUERY)
            continue
        if str(qid) in queries:
            log.skip(f"{where} (query {qid})", DUPLICATE_QUERY)
            continue
        queries[str(qid)] = text
    if not queries:
        _nothing_usable(path, "query", log, since, 'one {"_id": ..., "text": ...} per line')
    return queries


def _is_id(value: object) -> bool:
    """A usable id: a non-empty string, or an integer (BEIR files have both)."""
    if isinstance(value, bool):
        return False
    return (isinstance(value, str) and value.strip() != "") or isinstance(value, int)


def load_qrels(path: Path, log: SkipLog | None = None) -> Qrels:
    """``{query_id: {doc_id: relevance}}`` from a BEIR qrels TSV (with a header row).

    Bad lines and repeated (query, document) pairs are skipped into ``log`` (see the
    module's notes); without a log the first one raises. Blank lines are ignored.
    """
    log = log if log is not None else SkipLog(strict=True)
    since = len(log.skipped)
    qrels: Qrels = {}
    first = True
    with require_file(path, "qrels").open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                log.skip(where, NOT_UTF8)
                continue
            if not line.strip():
                continue
            row = next(csv.reader([line], delimiter="\t"))
            if first:
                first = False
                if row and not _is_integer(row[-1]):
                    continue  # header
            if len(row) != 3:
                log.skip(where, NOT_THREE_COLUMNS)
                continue
            qid, doc, score = (cell.strip() for cell in row)
            if not qid or not doc:
                log.skip(where, EMPTY_ID)
                continue
            if not _is_integer(score):
                log.skip(where, NOT_INTEGER)
                continue
            judged = qrels.setdefault(qid, {})
            if doc in judged:
                log.skip(f"{where} (query {qid}, document {doc})", DUPLICATE_JUDGMENT)
                continue
            judged[doc] = int(score)
    if not qrels:
        _nothing_usable(
            path, "judgment", log, since, "query-id, corpus-id and an integer score per line"
        )
    return qrels


def _is_integer(text: str) -> bool:
    return text.strip().removeprefix("-").removeprefix("+").isdigit()


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


def judged_queries(
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    log: SkipLog | None = None,
    *,
    max_query_chars: int | None = None,
) -> tuple[dict[str, str], Qrels, int]:
    """The queries to evaluate, their qrels, and how many have no relevant judgment.

    A query with empty or whitespace-only text is skipped, and with ``max_query_chars``
    so is any text that search would refuse (too long, no letters or digits); judgments
    for a query not in ``queries`` are skipped; a query without a relevant judgment is
    left out and counted, as BEIR does: it has no defined nDCG, recall or MRR. Each goes
    to ``log`` (a query without judgments never raises, even when the log is strict).
    InvalidInputError when no query is left, with the reasons.
    """
    log = log if log is not None else SkipLog()
    since = len(log.skipped)
    usable: dict[str, str] = {}
    for qid, text in queries.items():
        if not text.strip():
            log.skip(f"query {qid}", EMPTY_QUERY)
            continue
        if max_query_chars is not None:
            try:
                validate_query(text, max_query_chars)
            except QueryError as exc:
                log.skip(f"query {qid} ({exc})", REFUSED_QUERY)
                continue
        usable[qid] = text
    for qid, docs in qrels.items():
        if qid not in queries:
            log.skip(f"query {qid} ({len(docs)} judged)", UNKNOWN_QUERY)
    judged: dict[str, str] = {}
    unjudged = 0
    for qid, text in usable.items():
        if any(rel > 0 for rel in qrels.get(qid, {}).values()):
            judged[qid] = text
        else:
            unjudged += 1
            log.skipped.append(Skipped(f"query {qid}", UNJUDGED))
    if not judged:
        reasons = describe(SkipLog(skipped=log.skipped[since:]).summary(EXAMPLES))
        raise InvalidInputError(
            f"none of the {len(queries)} queries can be evaluated ({reasons}); "
            "check that the queries and qrels files belong together"
        )
    return judged, {qid: dict(qrels[qid]) for qid in judged}, unjudged


def relevant_documents(qrels: Mapping[str, Mapping[str, int]]) -> list[str]:
    """Every document judged relevant (score above 0), once, in order of first judgment."""
    return list(
        dict.fromkeys(doc for docs in qrels.values() for doc, rel in docs.items() if rel > 0)
    )


@dataclass(frozen=True)
class InputReport:
    """What an evaluation left out of its input, and the judged documents it lacked.

    ``skipped``: per reason, how many and the first few places (file:line or query id).
    ``missing_documents``: how many judged-relevant documents are not in the collection
    (or corpus); they stay in the judgments and count as relevant, so each one costs
    recall. ``missing_examples``: the first few of their ids.
    """

    skipped: tuple[SkipGroup, ...] = ()
    missing_documents: int = 0
    missing_examples: tuple[str, ...] = ()

    @classmethod
    def build(cls, log: SkipLog, missing: Sequence[str]) -> InputReport:
        return cls(tuple(log.summary(EXAMPLES)), len(missing), tuple(missing[:EXAMPLES]))

    def to_dict(self) -> dict[str, Any]:
        """``{"skipped": [{reason, count, examples}], "missing_documents": {count, examples}}``."""
        return {
            "skipped": [group.to_dict() for group in self.skipped],
            "missing_documents": {
                "count": self.missing_documents,
                "examples": list(self.missing_examples),
            },
        }
