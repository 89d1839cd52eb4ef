"""Reading real evaluation files: bad lines and unusable queries are skipped and counted.

No database here: the loaders, :func:`judged_queries` and the reranker evaluation, which
takes a corpus instead of a collection. tests/integration/test_eval.py runs the same
files through ``hybridsearch eval`` and ``tune``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from hybridsearch.errors import InvalidInputError
from hybridsearch.eval import beir
from hybridsearch.eval.beir import judged_queries, load_qrels, load_queries
from hybridsearch.eval.models import evaluate_reranker
from hybridsearch.eval.report import input_lines, input_markdown
from hybridsearch.loaders import SkipLog


def counts(log: SkipLog) -> dict[str, int]:
    return {group.reason: group.count for group in log.summary()}


def write_lines(path: Path, lines: Sequence[str | bytes]) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def test_queries_file_skips_bad_lines_and_keeps_the_first_of_a_repeated_id(
    tmp_path: Path,
) -> None:
    path = write_lines(
        tmp_path / "queries.jsonl",
        [
            json.dumps({"_id": "q1", "text": "first text"}),
            "{not json",
            json.dumps({"_id": "q2"}),  # no text
            json.dumps({"_id": "q3", "text": None}),
            json.dumps(["q4", "a list"]),
            "",  # blank lines are no records
            json.dumps({"_id": "q1", "text": "second text"}),
            b'{"_id": "q5", "text": "caf\xe9"}',  # latin-1, not UTF-8
            json.dumps({"_id": 7, "text": "an integer id"}),
            json.dumps({"_id": "q8", "text": "   "}),
        ],
    )
    log = SkipLog()
    queries = load_queries(path, log)
    # empty text is not the loader's to judge: judged_queries skips it for every source
    assert queries == {"q1": "first text", "7": "an integer id", "q8": "   "}
    assert counts(log) == {
        beir.NOT_JSON: 1,
        beir.NOT_QUERY: 3,
        beir.DUPLICATE_QUERY: 1,
        beir.NOT_UTF8: 1,
    }
    groups = {g.reason: g for g in log.summary()}
    assert groups[beir.NOT_JSON].examples == (f"{path}:2",)
    assert groups[beir.NOT_QUERY].examples == (f"{path}:3", f"{path}:4", f"{path}:5")
    assert groups[beir.DUPLICATE_QUERY].examples == (f"{path}:7 (query q1)",)


def test_without_a_log_the_first_bad_line_raises_with_its_place(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "queries.jsonl", [json.dumps({"_id": "q1", "text": "a"}), "{"])
    with pytest.raises(InvalidInputError) as error:
        load_queries(path)
    assert str(error.value) == f"{path}:2: {beir.NOT_JSON}"


def test_qrels_file_skips_bad_lines_and_repeated_pairs(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "qrels.tsv",
        [
            "query-id\tcorpus-id\tscore",
            "q1\td1\t1",
            "q1\td2",  # two columns
            "q1\td3\t1\textra",  # four
            "q1\td4\thigh",  # not an integer
            "q1\td5\t1.5",
            "\td6\t1",  # no query id
            "",
            "q1\td1\t0",  # repeats (q1, d1): the first judgment stands
            "q2\td1\t2\r",
        ],
    )
    log = SkipLog()
    assert load_qrels(path, log) == {"q1": {"d1": 1}, "q2": {"d1": 2}}
    assert counts(log) == {
        beir.NOT_THREE_COLUMNS: 2,
        beir.NOT_INTEGER: 2,
        beir.EMPTY_ID: 1,
        beir.DUPLICATE_JUDGMENT: 1,
    }
    duplicate = next(g for g in log.summary() if g.reason == beir.DUPLICATE_JUDGMENT)
    assert duplicate.examples == (f"{path}:9 (query q1, document d1)",)


def test_a_thousand_bad_lines_make_one_group_with_five_places(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "qrels.tsv", ["q1\td1\t1", *(f"q1\td{n}" for n in range(2, 1002))]
    )
    log = SkipLog()
    load_qrels(path, log)
    [group] = log.summary()
    assert group.count == 1000
    assert group.examples == tuple(f"{path}:{n}" for n in range(2, 7))
    assert input_lines(beir.InputReport.build(log, [])) == [
        "skipped input:",
        f"  1000 × {beir.NOT_THREE_COLUMNS}: {', '.join(group.examples)}, …",
    ]


def test_a_file_with_nothing_usable_says_what_was_wrong(tmp_path: Path) -> None:
    queries = write_lines(tmp_path / "queries.jsonl", ["{", "[]", "{"])
    with pytest.raises(InvalidInputError) as error:
        load_queries(queries, SkipLog())
    message = str(error.value)
    assert f"{queries}: no usable query" in message
    assert f"2 × {beir.NOT_JSON} ({queries}:1, {queries}:3)" in message
    assert f"1 × {beir.NOT_QUERY}" in message

    qrels = write_lines(tmp_path / "qrels.tsv", ["query-id\tcorpus-id\tscore", "q1 d1 1"])
    with pytest.raises(InvalidInputError) as error:
        load_qrels(qrels, SkipLog())
    assert f"no usable judgment; skipped 1 × {beir.NOT_THREE_COLUMNS} ({qrels}:2)" in str(
        error.value
    )

    empty = write_lines(tmp_path / "empty.jsonl", [""])
    with pytest.raises(InvalidInputError, match="holds no query"):
        load_queries(empty, SkipLog())


def test_judged_queries_skips_what_cannot_be_evaluated() -> None:
    queries = {
        "good": "does aspirin thin the blood",
        "empty": "",
        "blank": " \t ",
        "symbols": "???",
        "long": "word " * 50,
        "unjudged": "a query nobody judged",
        "irrelevant": "only non-relevant judgments",
    }
    qrels = {
        "good": {"d1": 1, "d2": 0},
        "empty": {"d1": 1},  # the query is known: its judgments are not "unknown"
        "symbols": {"d1": 1},
        "long": {"d1": 1},
        "irrelevant": {"d2": 0},
        "stranger": {"d3": 1, "d4": 1},
    }
    log = SkipLog()
    judged, judged_qrels, unjudged = judged_queries(queries, qrels, log, max_query_chars=100)
    assert judged == {"good": queries["good"]}
    assert judged_qrels == {"good": {"d1": 1, "d2": 0}}
    assert unjudged == 2
    groups = {g.reason: g for g in log.summary()}
    assert {reason: g.count for reason, g in groups.items()} == {
        beir.EMPTY_QUERY: 2,
        beir.REFUSED_QUERY: 2,
        beir.UNKNOWN_QUERY: 1,
        beir.UNJUDGED: 2,
    }
    assert groups[beir.EMPTY_QUERY].examples == ("query empty", "query blank")
    assert groups[beir.UNKNOWN_QUERY].examples == ("query stranger (2 judged)",)
    assert groups[beir.UNJUDGED].examples == ("query unjudged", "query irrelevant")
    refused = groups[beir.REFUSED_QUERY].examples
    assert refused[0].startswith("query symbols (") and "no letters or digits" in refused[0]
    assert refused[1].startswith("query long (") and "the limit is 100" in refused[1]


def test_judged_queries_without_any_usable_query_lists_the_reasons() -> None:
    with pytest.raises(InvalidInputError) as error:
        judged_queries({"a": " ", "b": "text"}, {"c": {"d1": 1}})
    message = str(error.value)
    assert "none of the 2 queries can be evaluated" in message
    assert f"1 × {beir.EMPTY_QUERY} (query a)" in message
    assert f"1 × {beir.UNKNOWN_QUERY} (query c (1 judged))" in message
    assert f"1 × {beir.UNJUDGED} (query b)" in message


def test_unjudged_queries_are_counted_even_in_a_strict_log() -> None:
    log = SkipLog(strict=True)
    judged, _, unjudged = judged_queries({"a": "x", "b": "y"}, {"a": {"d": 1}}, log)
    assert list(judged) == ["a"] and unjudged == 1
    assert counts(log) == {beir.UNJUDGED: 1}


class WordOverlap:
    """Scores a passage by the words it shares with the query: a real, if crude, scorer."""

    def score(self, query: str, passages: Sequence[str]) -> npt.NDArray[np.float32]:
        words = set(query.split())
        return np.array([len(words & set(p.split())) for p in passages], dtype=np.float32)


def test_reranker_evaluation_lists_skips_and_keeps_documents_missing_from_the_corpus() -> None:
    corpus = {"d1": "aspirin thins blood", "d2": "cats sleep a lot", "d3": "blood pressure"}
    queries = {"q1": "aspirin blood", "q2": "   ", "q3": "sleeping cats"}
    qrels = {"q1": {"d1": 1, "gone": 1}, "q2": {"d2": 1}, "q3": {"d2": 1}, "q9": {"d1": 1}}
    candidates = {"q1": ["d3", "d2", "d1"], "q3": ["d1", "d2"]}
    log = SkipLog()
    result = evaluate_reranker(
        WordOverlap(), queries, corpus, qrels, candidates, depth=3, ks=(1, 3), skips=log
    )
    assert (result.queries, result.skipped) == (2, 0)
    assert {g.reason: g.count for g in result.input.skipped} == {
        beir.EMPTY_QUERY: 1,
        beir.UNKNOWN_QUERY: 1,
    }
    assert (result.input.missing_documents, result.input.missing_examples) == (1, ("gone",))
    # "gone" stays relevant: q1 can find at most one of its two relevant documents
    assert result.reranked["recall@3"] == pytest.approx((1 / 2 + 1) / 2)
    assert result.to_dict()["input"]["missing_documents"] == {"count": 1, "examples": ["gone"]}
    markdown = "\n".join(input_markdown(result.input, holder="corpus"))
    assert f"| {beir.EMPTY_QUERY} | 1 | `query q2` |" in markdown
    assert "1 judged-relevant document is not in the corpus" in markdown
