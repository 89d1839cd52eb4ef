"""Evaluation building blocks without a database: metrics, runs, loaders, grid, report."""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from hybridsearch.errors import InvalidInputError
from hybridsearch.eval.beir import judged_queries, load_qrels
from hybridsearch.eval.metrics import (
    DEFAULT_KS,
    Evaluator,
    evaluate,
    metric_names,
    parse_ks,
    parse_metric,
)
from hybridsearch.eval.models import evaluate_reranker, load_sts_pairs
from hybridsearch.eval.report import plot_metrics, text_table
from hybridsearch.eval.runs import (
    document_ranking,
    read_trec,
    rerank_order,
    to_run,
    write_trec,
)
from hybridsearch.eval.tune import Grid

# -- an independent implementation of the trec_eval definitions -------------------------------


def ref_metric(family: str, k: int, ranking: Sequence[str], judged: dict[str, int]) -> float:
    """trec_eval's definitions, written out: gains are the judged grades, relevant is grade > 0."""
    top = list(ranking[:k])
    relevant = {doc for doc, grade in judged.items() if grade > 0}
    hits = [doc in relevant for doc in top]
    if family == "precision":
        return sum(hits) / k
    if family == "recall":
        return sum(hits) / len(relevant)
    if family == "hit":
        return 1.0 if any(hits) else 0.0
    if family == "mrr":
        return next((1.0 / rank for rank, hit in enumerate(hits, start=1) if hit), 0.0)
    if family == "map":
        found, total = 0, 0.0
        for rank, hit in enumerate(hits, start=1):
            if hit:
                found += 1
                total += found / rank
        return total / len(relevant)
    if family == "ndcg":
        dcg = sum(
            max(judged.get(doc, 0), 0) / math.log2(rank + 1)
            for rank, doc in enumerate(top, start=1)
        )
        ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
        idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1))
        return dcg / idcg
    raise AssertionError(family)


def test_metrics_agree_with_trec_eval_definitions_on_random_runs() -> None:
    rng = random.Random(7)
    docs = [f"d{i}" for i in range(60)]
    qrels: dict[str, dict[str, int]] = {}
    rankings: dict[str, list[str]] = {}
    for q in range(150):
        qid = f"q{q}"
        judged = rng.sample(docs, rng.randint(1, 12))
        qrels[qid] = {doc: rng.choice([0, 1, 1, 2, 3]) for doc in judged}
        qrels[qid][judged[0]] = max(qrels[qid][judged[0]], 1)  # at least one relevant
        rankings[qid] = rng.sample(docs, rng.randint(0, 40))
    names = metric_names((1, 3, 5, 10, 20, 50))
    ours = evaluate(qrels, to_run(rankings), names)
    for name in names:
        family, k = parse_metric(name)
        expected = sum(ref_metric(family, k, rankings[q], qrels[q]) for q in qrels) / len(qrels)
        assert ours[name] == pytest.approx(expected, abs=1e-6), name


def test_hand_computed_example() -> None:
    qrels = {"q": {"a": 1, "b": 1, "c": 0}}
    ours = evaluate(
        qrels,
        to_run({"q": ["a", "x", "b"]}),
        ["precision@3", "recall@1", "mrr@10", "map@10", "ndcg@3", "hit@1"],
    )
    assert ours == pytest.approx(
        {
            "precision@3": 2 / 3,
            "recall@1": 1 / 2,
            "mrr@10": 1.0,
            "map@10": (1 + 2 / 3) / 2,
            "ndcg@3": (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)),
            "hit@1": 1.0,
        },
        abs=1e-6,
    )


def test_a_judged_query_without_results_counts_as_zero() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    evaluator = Evaluator(qrels, ["ndcg@10", "recall@10"])
    assert evaluator.mean({"q1": {"a": 1.0}}) == {"ndcg@10": 0.5, "recall@10": 0.5}
    # run entries for queries outside the judgments are ignored
    assert evaluator.mean({"q1": {"a": 1.0}, "zz": {"b": 1.0}})["ndcg@10"] == 0.5


def test_parse_ks_and_metric_names() -> None:
    assert parse_ks("10, 1,5,10") == (1, 5, 10)
    assert parse_ks(",".join(map(str, DEFAULT_KS))) == DEFAULT_KS
    for bad in ("", "1,,5", "0", "-3", "five", "1.5"):
        with pytest.raises(InvalidInputError, match="cutoff"):
            parse_ks(bad)
    assert metric_names([10, 1], ["ndcg", "hit"]) == ["ndcg@1", "ndcg@10", "hit@1", "hit@10"]
    assert parse_metric("recall@100") == ("recall", 100)
    for bad in ("ndcg", "ndcg@0", "bleu@4", "ndcg@x"):
        with pytest.raises(InvalidInputError, match="metric"):
            parse_metric(bad)


# -- runs ---------------------------------------------------------------------------------------


def test_document_ranking_keeps_each_documents_best_chunk() -> None:
    assert document_ranking(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]


def test_rerank_order_puts_reranked_top_n_first_then_the_fused_rest() -> None:
    fused = ["c1", "c2", "c3", "c4", "c5", "c6"]
    # reranker saw the first four; c3 and c4 tie, so fused order decides
    assert rerank_order(fused, [0.1, 0.9, 0.5, 0.5], top_n=3) == [
        "c2",
        "c3",
        "c4",
        "c1",
        "c5",
        "c6",
    ]
    assert rerank_order(fused, [], top_n=3) == fused
    with pytest.raises(InvalidInputError):
        rerank_order(["a"], [1.0, 2.0], top_n=1)


def test_trec_files_round_trip_and_evaluate_like_the_rankings(tmp_path: Path) -> None:
    rankings = {"q1": ["d3", "d1", "d2"], "q2": ["d9"], "q3": []}
    path = tmp_path / "hybrid.trec"
    write_trec(path, rankings, tag="hybridsearch-hybrid")
    lines = [line.split() for line in path.read_text().splitlines()]
    assert lines[0] == ["q1", "Q0", "d3", "1", "3", "hybridsearch-hybrid"]
    assert [line[3] for line in lines] == ["1", "2", "3", "1"]
    assert read_trec(path) == {"q1": ["d3", "d1", "d2"], "q2": ["d9"]}
    qrels = {"q1": {"d1": 1}, "q2": {"d9": 2}, "q3": {"d4": 1}}
    names = metric_names((1, 3), ["ndcg", "map"])
    assert evaluate(qrels, to_run(read_trec(path)), names) == evaluate(
        qrels, to_run(rankings), names
    )


def test_read_trec_orders_by_score_then_document_id_like_trec_eval(tmp_path: Path) -> None:
    path = tmp_path / "run.trec"
    path.write_text("q 0 a 1 1.5 t\nq 0 b 2 2.0 t\nq 0 c 3 1.5 t\nq 0 b 4 0.1 t\n")
    assert read_trec(path) == {"q": ["b", "c", "a"]}
    path.write_text("q Q0 a 1\n")
    with pytest.raises(InvalidInputError, match=r"run\.trec:1"):
        read_trec(path)
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_trec(tmp_path / "missing.trec")
    with pytest.raises(InvalidInputError, match="one word"):
        write_trec(path, {}, tag="two words")


# -- loaders ------------------------------------------------------------------------------------


def test_judged_queries_skips_and_counts_queries_without_relevant_judgments(
    tmp_path: Path,
) -> None:
    qrels_path = tmp_path / "qrels.tsv"
    qrels_path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t0\nq9\td9\t1\n")
    qrels = load_qrels(qrels_path)
    queries = {"q1": "one", "q2": "two", "q3": "three"}
    judged, judged_qrels, skipped = judged_queries(queries, qrels)
    assert judged == {"q1": "one"}
    assert judged_qrels == {"q1": {"d1": 1}}
    assert skipped == 2
    with pytest.raises(InvalidInputError, match="none of the 1 queries"):
        judged_queries({"q3": "three"}, qrels)
    qrels_path.write_text("q\td\tscore\nq1\td1\thigh\n")
    with pytest.raises(InvalidInputError, match=r"qrels\.tsv:2"):
        load_qrels(qrels_path)
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_qrels(tmp_path / "nope.tsv")


def test_load_sts_pairs(tmp_path: Path) -> None:
    path = tmp_path / "sts.tsv"
    path.write_text('sentence1\tsentence2\tscore\nA "cat".\tA cat.\t4.5\n\nDogs.\tTaxes.\t0\n')
    pairs = load_sts_pairs(path)
    assert [(p.first, p.second, p.score) for p in pairs] == [
        ('A "cat".', "A cat.", 4.5),
        ("Dogs.", "Taxes.", 0.0),
    ]
    path.write_text("a\tb\t1\nc\td\n")
    with pytest.raises(InvalidInputError, match=r"sts\.tsv:2"):
        load_sts_pairs(path)


# -- reranker evaluation arithmetic -------------------------------------------------------------


class WordOverlap:
    """A transparent scorer: how many query words a passage contains."""

    def score(self, query: str, passages: Sequence[str]) -> npt.NDArray[np.float32]:
        words = set(query.split())
        return np.array([len(words & set(p.split())) for p in passages], dtype=np.float32)


def test_evaluate_reranker_pairwise_accuracy_and_metrics() -> None:
    corpus = {"r1": "red apple", "r2": "apple", "n1": "red car", "n2": "blue sky", "x": "x"}
    queries = {"q": "red apple", "skipped": "nothing judged"}
    qrels = {"q": {"r1": 1, "r2": 1, "n1": 0}}
    candidates = {"q": ["n2", "n1", "r2", "r1"]}
    result = evaluate_reranker(WordOverlap(), queries, corpus, qrels, candidates, ks=(1, 4))
    # scores r1=2, r2=1, n1=1, n2=0: pairs (r1,n1) (r1,n2) (r2,n2) right, (r2,n1) a tie
    assert result.pairs == 4
    assert result.pairwise_accuracy == pytest.approx(3.5 / 4)
    assert (result.queries, result.skipped) == (1, 1)
    assert result.candidates["mrr@4"] == pytest.approx(1 / 3)
    assert result.reranked["mrr@4"] == 1.0
    # reranked order r1, r2 (tie with n1 broken by candidate order: n1 came first)
    assert result.reranked["precision@1"] == 1.0
    assert result.reranked["map@4"] == pytest.approx((1 + 2 / 3) / 2)
    with pytest.raises(InvalidInputError, match="not in the corpus"):
        evaluate_reranker(WordOverlap(), queries, corpus, qrels, {"q": ["ghost"]})


# -- tune grid ----------------------------------------------------------------------------------


def test_grid_points_cover_every_combination_once() -> None:
    grid = Grid(
        top_ks=(20, 50), fusions=("rrf", "weighted"), rrf_ks=(10, 60), vector_weights=(0.3, 0.7)
    )
    points = grid.fusion_points()
    assert len(points) == 2 * (2 * 2 + 2)
    assert len(set(points)) == len(points)
    assert points[0].top_k == 50  # deepest first, so rerank batches are large
    assert {p.rrf_k for p in points if p.fusion == "weighted"} == {None}
    assert all(p.vector_weight + p.keyword_weight == pytest.approx(1) for p in points)
    for bad in (
        Grid(top_ks=(0,)),
        Grid(vector_weights=(1.5,)),
        Grid(rrf_ks=(-1,)),
        Grid(rerank_depths=(500,)),
        Grid(top_ks=()),
    ):
        with pytest.raises(InvalidInputError):
            bad.check()


# -- report -------------------------------------------------------------------------------------


def test_text_table_aligns_columns() -> None:
    table = text_table(["metric", "vector"], [["ndcg@10", "0.5000"], ["hit@1", "1.0000"]])
    assert table.splitlines() == [
        "metric   vector",
        "ndcg@10  0.5000",
        "hit@1    1.0000",
    ]


def test_plot_is_a_png(tmp_path: Path) -> None:
    stages = {
        "vector": {"ndcg@1": 0.2, "ndcg@10": 0.4, "recall@1": 0.1, "recall@10": 0.6},
        "hybrid": {"ndcg@1": 0.3, "ndcg@10": 0.5, "recall@1": 0.2, "recall@10": 0.7},
    }
    path = plot_metrics(stages, tmp_path / "plots" / "metrics.png", title="t")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 300 and height > 200
