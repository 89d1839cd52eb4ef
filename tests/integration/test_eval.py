"""Evaluation end to end: `hybridsearch eval`, `tune`, `eval-reranker`, `eval-sts` on SciFact.

A small collection holds the relevant documents of 15 SciFact train queries (ones the test
reranker was not trained on) plus distractors; three more queries have no judgments.
"""

from __future__ import annotations

import io
import itertools
import json
import struct
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hybridsearch import Document, HybridSearch, Settings
from hybridsearch.cli import main
from hybridsearch.eval import beir
from hybridsearch.eval.beir import load_qrels, load_queries
from hybridsearch.eval.metrics import evaluate, metric_names
from hybridsearch.eval.pipeline import PipelineConfig, evaluate_pipeline
from hybridsearch.eval.runs import read_trec, to_run
from hybridsearch.eval.tune import Grid, tune

# The test reranker trains on the first 400 judged train queries; these come well after.
EVAL_QUERIES = slice(720, 735)
DISTRACTORS = 40
KS = (1, 5, 10)
TOP_K, TOP_N = 20, 5


@dataclass(frozen=True)
class EvalData:
    queries: Path
    qrels: Path
    judged: dict[str, str]
    unjudged: int


def run_cli(database_url: str, *args: str) -> tuple[int, str, str]:
    """``hybridsearch ARGS`` in this process against the test database."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as env, redirect_stdout(out), redirect_stderr(err):
        env.setenv("HYBRIDSEARCH_DATABASE_URL", database_url)
        env.setenv("HYBRIDSEARCH_TORCH_THREADS", "1")
        env.delenv("HYBRIDSEARCH_RERANKER_MODEL", raising=False)
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def eval_data(scifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> EvalData:
    queries = load_queries(scifact_dir / "queries.jsonl")
    qrels = load_qrels(scifact_dir / "qrels" / "train.tsv")
    judged = {qid: queries[qid] for qid in list(qrels)[EVAL_QUERIES]}
    unjudged = [qid for qid in queries if qid not in qrels][:3]
    folder = tmp_path_factory.mktemp("eval_data")
    with (folder / "queries.jsonl").open("w") as out:
        for qid in [*judged, *unjudged]:
            out.write(json.dumps({"_id": qid, "text": queries[qid]}) + "\n")
    with (folder / "qrels.tsv").open("w") as out:
        out.write("query-id\tcorpus-id\tscore\n")
        for qid in judged:
            for doc, score in qrels[qid].items():
                out.write(f"{qid}\t{doc}\t{score}\n")
    return EvalData(folder / "queries.jsonl", folder / "qrels.tsv", judged, len(unjudged))


@pytest.fixture(scope="module")
def eval_collection(hs: HybridSearch, scifact_dir: Path, eval_data: EvalData) -> Iterator[str]:
    qrels = load_qrels(eval_data.qrels)
    wanted = {doc for docs in qrels.values() for doc in docs}
    documents = []
    with (scifact_dir / "corpus.jsonl").open() as lines:
        for number, line in enumerate(lines):
            record = json.loads(line)
            if record["_id"] in wanted or number < DISTRACTORS:
                text = f"{record['title']}\n\n{record['text']}"
                documents.append(Document(record["_id"], text))
    name = "eval_sample"
    hs.drop_collection(name)
    hs.create_collection(name)
    hs.add_documents(name, documents)
    yield name
    hs.drop_collection(name)


@dataclass(frozen=True)
class EvalOutputs:
    stdout: str
    stderr: str
    report: dict[str, Any]
    runs: Path
    plot: Path
    markdown: Path


@pytest.fixture(scope="module")
def eval_outputs(
    database_url: str,
    eval_collection: str,
    eval_data: EvalData,
    trained_reranker: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> EvalOutputs:
    out = tmp_path_factory.mktemp("eval_out")
    code, stdout, stderr = run_cli(
        database_url,
        "eval",
        "--collection",
        eval_collection,
        "--queries",
        str(eval_data.queries),
        "--qrels",
        str(eval_data.qrels),
        "--k",
        ",".join(map(str, KS)),
        "--top-k",
        str(TOP_K),
        "--top-n",
        str(TOP_N),
        "--reranker",
        str(trained_reranker),
        "--json",
        str(out / "eval.json"),
        "--run-out",
        str(out / "runs"),
        "--plot",
        str(out / "plots" / "eval.png"),
        "--report",
        str(out / "eval.md"),
    )
    assert code == 0, stderr
    report = json.loads((out / "eval.json").read_text())
    return EvalOutputs(
        stdout, stderr, report, out / "runs", out / "plots" / "eval.png", out / "eval.md"
    )


STAGES = ["vector", "keyword", "hybrid", "rerank"]


def test_eval_json_has_every_stage_and_metric(
    eval_outputs: EvalOutputs, eval_data: EvalData
) -> None:
    report = eval_outputs.report
    assert report["queries"] == len(eval_data.judged)
    assert report["skipped"] == eval_data.unjudged
    assert list(report["stages"]) == STAGES
    expected = {
        f"{m}@{k}" for m in ("ndcg", "recall", "mrr", "map", "precision", "hit") for k in KS
    }
    for stage, metrics in report["stages"].items():
        assert set(metrics) == expected, stage
        assert all(0.0 <= value <= 1.0 for value in metrics.values())
        assert metrics["hit@10"] >= metrics["hit@1"]
        assert metrics["recall@10"] >= metrics["recall@5"]
    # the judged documents are in a small collection: every stage finds some of them
    assert all(report["stages"][s]["recall@10"] > 0.3 for s in STAGES)
    assert report["config"]["top_k"] == TOP_K and report["config"]["rerank_depth"] == TOP_K
    # the printed table has a row per metric and a column per stage
    lines = eval_outputs.stdout.splitlines()
    assert lines[0].split() == ["metric", *STAGES]
    assert any(line.split()[0] == "ndcg@10" for line in lines[1:])
    assert f"{len(eval_data.judged)} queries evaluated, {eval_data.unjudged} skipped" in (
        eval_outputs.stdout
    )


def test_run_files_are_document_level_and_reproduce_the_figures(
    eval_outputs: EvalOutputs, eval_data: EvalData
) -> None:
    qrels = load_qrels(eval_data.qrels)
    names = metric_names(KS)
    runs = {}
    for stage in STAGES:
        path = eval_outputs.runs / f"{stage}.trec"
        by_query: dict[str, list[list[str]]] = {}
        for line in path.read_text().splitlines():
            fields = line.split()
            assert len(fields) == 6 and fields[1] == "Q0" and fields[5] == f"hybridsearch-{stage}"
            by_query.setdefault(fields[0], []).append(fields)
        assert set(by_query) <= set(eval_data.judged)
        for rows in by_query.values():
            docs = [row[2] for row in rows]
            assert len(docs) == len(set(docs)) <= TOP_K  # one line per document
            assert [int(row[3]) for row in rows] == list(range(1, len(rows) + 1))
            scores = [float(row[4]) for row in rows]
            assert all(a > b for a, b in itertools.pairwise(scores))
        runs[stage] = read_trec(path)
        figures = evaluate(qrels, to_run(runs[stage]), names)
        assert figures == pytest.approx(eval_outputs.report["stages"][stage], abs=1e-9)
    # reranking reorders the fused candidates, adding and dropping none
    for qid, docs in runs["hybrid"].items():
        assert sorted(runs["rerank"][qid]) == sorted(docs)


def test_plot_and_markdown_report(eval_outputs: EvalOutputs) -> None:
    data = eval_outputs.plot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 300 and height > 200
    markdown = eval_outputs.markdown.read_text()
    assert "| metric | vector | keyword | hybrid | rerank |" in markdown
    assert "![metrics against k](plots/eval.png)" in markdown
    ndcg = eval_outputs.report["stages"]["rerank"]["ndcg@10"]
    assert f"{ndcg:.4f}" in markdown


def test_tune_fuses_in_python_exactly_as_search_does_in_sql(
    settings: Settings, eval_collection: str, eval_data: EvalData, trained_reranker: Path
) -> None:
    qrels = load_qrels(eval_data.qrels)
    queries = load_queries(eval_data.queries)
    grid = Grid(
        top_ks=(TOP_K,),
        fusions=("rrf", "weighted"),
        rrf_ks=(10,),
        vector_weights=(0.3,),
        rerank_depths=(0, TOP_N),
    )
    with HybridSearch(settings, reranker=str(trained_reranker)) as hs:
        result = tune(hs, eval_collection, queries, qrels, grid, metrics=metric_names(KS))
        assert (result.queries, result.skipped) == (len(eval_data.judged), eval_data.unjudged)
        assert len(result.rows) == 4
        # each query's (query, chunk) pair is reranked once however many points use it
        assert 0 < result.reranked_pairs <= len(eval_data.judged) * TOP_N * 2
        for row in result.rows:
            config = PipelineConfig(
                top_k=TOP_K,
                top_n=row.rerank_depth or TOP_N,
                rerank_depth=row.rerank_depth or None,
                fusion=row.point.fusion,
                rrf_k=row.point.rrf_k,
                vector_weight=row.point.vector_weight,
                keyword_weight=row.point.keyword_weight,
            )
            stage = "rerank" if row.rerank_depth else "hybrid"
            evaluation = evaluate_pipeline(
                hs, eval_collection, queries, qrels, stages=[stage], ks=KS, config=config
            )
            assert row.metrics == pytest.approx(evaluation.stages[stage], abs=1e-9), row


def test_tune_cli_ranks_the_grid_and_saves_the_best(
    database_url: str,
    hs: HybridSearch,
    eval_collection: str,
    eval_data: EvalData,
    trained_reranker: Path,
    tmp_path: Path,
) -> None:
    before = hs.get_collection(eval_collection).settings
    try:
        code, stdout, stderr = run_cli(
            database_url,
            "tune",
            "--collection",
            eval_collection,
            "--queries",
            str(eval_data.queries),
            "--qrels",
            str(eval_data.qrels),
            "--top-k",
            "10,20",
            "--rrf-k",
            "10,60",
            "--vector-weights",
            "0.3,0.7",
            "--rerank-depth",
            "0,5",
            "--reranker",
            str(trained_reranker),
            "--json",
            str(tmp_path / "tune.json"),
            "--save",
        )
        assert code == 0, stderr
        result = json.loads((tmp_path / "tune.json").read_text())
        rows = result["rows"]
        # TopK x (rrf_k x weights + weighted x weights + zscore x weights) x depth
        assert len(rows) == 2 * (2 * 2 + 2 + 2) * 2
        objective = [row["ndcg@10"] for row in rows]
        assert objective == sorted(objective, reverse=True)
        assert result["best"] == rows[0]
        assert {"recall@100", "mrr@10"} <= set(rows[0])
        assert (result["queries"], result["skipped"]) == (len(eval_data.judged), 3)
        # the table is printed best first, and the best settings are now the defaults
        table = stdout.splitlines()
        assert table[0].split()[:7] == [
            "#",
            "top_k",
            "fusion",
            "rrf_k",
            "w_vector",
            "w_keyword",
            "rerank",
        ]
        assert table[1].split()[0] == "1" and f"{rows[0]['ndcg@10']:.4f}" in table[1]
        assert "best by ndcg@10: hybridsearch eval --top-k" in stdout
        saved = hs.get_collection(eval_collection).settings
        best = result["best"]
        assert saved.fusion == best["fusion"]
        assert saved.vector_weight == best["vector_weight"]
        assert saved.keyword_weight == best["keyword_weight"]
        if best["rrf_k"] is not None:
            assert saved.rrf_k == best["rrf_k"]
    finally:
        hs.update_collection_settings(
            eval_collection,
            fusion=before.fusion,
            rrf_k=before.rrf_k,
            vector_weight=before.vector_weight,
            keyword_weight=before.keyword_weight,
        )


def test_eval_reranker_on_the_fused_candidates(
    database_url: str,
    scifact_dir: Path,
    eval_data: EvalData,
    eval_outputs: EvalOutputs,
    trained_reranker: Path,
    tmp_path: Path,
) -> None:
    code, stdout, stderr = run_cli(
        database_url,
        "eval-reranker",
        "--reranker",
        str(trained_reranker),
        "--corpus",
        str(scifact_dir / "corpus.jsonl"),
        "--queries",
        str(eval_data.queries),
        "--qrels",
        str(eval_data.qrels),
        "--candidates",
        str(eval_outputs.runs / "hybrid.trec"),
        "--depth",
        "10",
        "--k",
        ",".join(map(str, KS)),
        "--json",
        str(tmp_path / "reranker.json"),
    )
    assert code == 0, stderr
    result = json.loads((tmp_path / "reranker.json").read_text())
    assert (result["queries"], result["skipped"]) == (len(eval_data.judged), eval_data.unjudged)
    assert result["pairs"] > 0
    assert result["pairwise_accuracy"] > 0.5
    # the candidates, in their own order, score what the hybrid stage scored (to depth 10)
    candidates = result["stages"]["candidates"]
    assert candidates == pytest.approx(eval_outputs.report["stages"]["hybrid"], abs=1e-9)
    # reranking the ten keeps them, so recall@10 cannot change
    reranked = result["stages"]["reranked"]
    assert reranked.keys() == candidates.keys()
    assert reranked["recall@10"] == pytest.approx(candidates["recall@10"], abs=1e-9)
    assert "pairwise accuracy" in stdout


STS_PAIRS = [
    ("A man is playing a guitar.", "A man plays the guitar.", 5.0),
    ("A woman is slicing an onion.", "Someone is cutting an onion.", 4.6),
    ("Two dogs run across a field.", "Dogs are running on the grass.", 4.0),
    ("A child is reading a book.", "A kid reads a story in bed.", 3.4),
    ("The cat sleeps on the sofa.", "A dog sleeps on the couch.", 2.4),
    ("A plane is taking off.", "A bird flies over the lake.", 1.2),
    ("The stock market fell sharply today.", "A man is playing a flute.", 0.2),
    ("Protein folding depends on temperature.", "Kids play football after school.", 0.0),
]


def test_eval_sts_with_the_packaged_minilm(database_url: str, tmp_path: Path) -> None:
    pairs = tmp_path / "sts.tsv"
    pairs.write_text(
        "sentence1\tsentence2\tscore\n" + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in STS_PAIRS)
    )
    code, stdout, stderr = run_cli(
        database_url,
        "eval-sts",
        "--model",
        "sentence-transformers/all-MiniLM-L6-v2",
        "--pairs",
        str(pairs),
        "--json",
        str(tmp_path / "sts.json"),
    )
    assert code == 0, stderr
    result = json.loads((tmp_path / "sts.json").read_text())
    assert result["pairs"] == len(STS_PAIRS)
    assert result["spearman"] > 0.8
    assert "Spearman" in stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--k", "1,x"], "invalid cutoff"),
        (["--stages", "vector,bogus"], "unknown stage"),
        (["--stages", "rerank"], "needs a reranker"),
        (["--top-k", "5", "--top-n", "10"], "top_n"),
    ],
)
def test_eval_bad_input_is_one_line_and_exit_2(
    database_url: str, eval_collection: str, eval_data: EvalData, args: list[str], message: str
) -> None:
    code, _, stderr = run_cli(
        database_url,
        "eval",
        "--collection",
        eval_collection,
        "--queries",
        str(eval_data.queries),
        "--qrels",
        str(eval_data.qrels),
        *args,
    )
    assert code == 2
    assert stderr.startswith("hybridsearch: error:") and stderr.count("\n") == 1
    assert message in stderr


def test_missing_files_and_collections_are_reported(
    database_url: str, eval_collection: str, eval_data: EvalData, tmp_path: Path
) -> None:
    base = ["--queries", str(eval_data.queries), "--qrels", str(eval_data.qrels)]
    cases = [
        (
            [
                "eval",
                "--collection",
                eval_collection,
                "--queries",
                str(tmp_path / "q.jsonl"),
                "--qrels",
                str(eval_data.qrels),
            ],
            "queries file",
        ),
        (["eval", "--collection", "no_such_collection", *base], "no_such_collection"),
        (["tune", "--collection", eval_collection, *base, "--vector-weights", "2"], "[0, 1]"),
        (["eval-sts", "--pairs", str(tmp_path / "missing.tsv")], "STS pairs file"),
    ]
    for args, message in cases:
        code, _, stderr = run_cli(database_url, *args)
        assert code == 2, args
        assert stderr.startswith("hybridsearch: error:") and message in stderr, stderr


# -- real files: bad lines and unusable queries are skipped, counted and listed -----------


@dataclass(frozen=True)
class MessyData:
    """eval_data's files with bad lines added, and the clean input they amount to."""

    queries: Path
    qrels: Path
    clean_queries: dict[str, str]
    clean_qrels: dict[str, dict[str, int]]
    expected_skips: dict[str, int]


@pytest.fixture(scope="module")
def messy_data(eval_data: EvalData, tmp_path_factory: pytest.TempPathFactory) -> MessyData:
    queries = load_queries(eval_data.queries)
    qrels = load_qrels(eval_data.qrels)
    first = next(iter(eval_data.judged))
    some_doc = next(iter(qrels[first]))
    folder = tmp_path_factory.mktemp("messy")
    query_lines = [json.dumps({"_id": qid, "text": text}) for qid, text in queries.items()]
    query_lines[3:3] = [
        json.dumps({"_id": "empty-q", "text": ""}),
        json.dumps({"_id": "blank-q", "text": "  \t "}),
        json.dumps({"_id": first, "text": "a different text under a repeated id"}),
        '{"_id": "broken", "text": "no closing brace"',
        json.dumps({"_id": "no-text"}),
    ]
    (folder / "queries.jsonl").write_text("\n".join(query_lines) + "\n")
    qrels_lines = eval_data.qrels.read_text().splitlines()
    qrels_lines[2:2] = [
        f"empty-q\t{some_doc}\t1",  # judges a query whose text is empty
        f"no-such-query\t{some_doc}\t1",
        f"{first}\tno-such-doc\t1",  # a relevant document the collection lacks
        f"{first} {some_doc} 1",  # spaces, not tabs: one column
        f"{first}\tother-doc\thigh",
    ]
    (folder / "qrels.tsv").write_text("\n".join(qrels_lines) + "\n")
    return MessyData(
        folder / "queries.jsonl",
        folder / "qrels.tsv",
        clean_queries=queries,
        clean_qrels={**qrels, first: {**qrels[first], "no-such-doc": 1}},
        expected_skips={
            beir.NOT_JSON: 1,
            beir.NOT_QUERY: 1,
            beir.DUPLICATE_QUERY: 1,
            beir.NOT_THREE_COLUMNS: 1,
            beir.NOT_INTEGER: 1,
            beir.EMPTY_QUERY: 2,
            beir.UNKNOWN_QUERY: 1,
            beir.UNJUDGED: eval_data.unjudged,
        },
    )


def assert_lists_skips(stdout: str, expected: dict[str, int]) -> None:
    """The text report lists each reason once, with its count."""
    assert "skipped input:" in stdout
    for reason, count in expected.items():
        assert stdout.count(f"  {count} × {reason}: ") == 1, reason
    assert (
        "1 judged-relevant document is not in the collection; kept in the judgments, "
        "each counts as a recall failure: no-such-doc"
    ) in stdout


def test_eval_skips_bad_lines_and_scores_the_good_queries(
    database_url: str,
    hs: HybridSearch,
    eval_collection: str,
    eval_data: EvalData,
    messy_data: MessyData,
    tmp_path: Path,
) -> None:
    code, stdout, stderr = run_cli(
        database_url,
        "eval",
        "--collection",
        eval_collection,
        "--queries",
        str(messy_data.queries),
        "--qrels",
        str(messy_data.qrels),
        "--stages",
        "vector,keyword,hybrid",
        "--k",
        ",".join(map(str, KS)),
        "--top-k",
        str(TOP_K),
        "--top-n",
        str(TOP_N),
        "--json",
        str(tmp_path / "eval.json"),
        "--report",
        str(tmp_path / "eval.md"),
    )
    assert code == 0, stderr
    report = json.loads((tmp_path / "eval.json").read_text())
    assert (report["queries"], report["skipped"]) == (len(eval_data.judged), eval_data.unjudged)
    # the figures are those of the clean input; the missing document still counts as relevant
    clean = evaluate_pipeline(
        hs,
        eval_collection,
        messy_data.clean_queries,
        messy_data.clean_qrels,
        stages=["vector", "keyword", "hybrid"],
        ks=KS,
        config=PipelineConfig(top_k=TOP_K, top_n=TOP_N),
    )
    for stage, metrics in clean.stages.items():
        assert report["stages"][stage] == pytest.approx(metrics, abs=1e-9), stage
    skipped = {group["reason"]: group for group in report["input"]["skipped"]}
    assert {reason: g["count"] for reason, g in skipped.items()} == messy_data.expected_skips
    assert skipped[beir.NOT_JSON]["examples"] == [f"{messy_data.queries}:7"]
    assert skipped[beir.EMPTY_QUERY]["examples"] == ["query empty-q", "query blank-q"]
    assert skipped[beir.UNKNOWN_QUERY]["examples"] == ["query no-such-query (1 judged)"]
    assert report["input"]["missing_documents"] == {"count": 1, "examples": ["no-such-doc"]}
    assert_lists_skips(stdout, messy_data.expected_skips)
    markdown = (tmp_path / "eval.md").read_text()
    assert "## Skipped input" in markdown
    for reason, count in messy_data.expected_skips.items():
        assert f"| {reason} | {count} |" in markdown
    assert "`no-such-doc`" in markdown


def test_tune_skips_bad_lines_and_scores_the_good_queries(
    database_url: str,
    hs: HybridSearch,
    eval_collection: str,
    eval_data: EvalData,
    messy_data: MessyData,
    tmp_path: Path,
) -> None:
    code, stdout, stderr = run_cli(
        database_url,
        "tune",
        "--collection",
        eval_collection,
        "--queries",
        str(messy_data.queries),
        "--qrels",
        str(messy_data.qrels),
        "--top-k",
        str(TOP_K),
        "--fusion",
        "rrf",
        "--rrf-k",
        "60",
        "--vector-weights",
        "0.5",
        "--rerank-depth",
        "0",
        "--json",
        str(tmp_path / "tune.json"),
    )
    assert code == 0, stderr
    result = json.loads((tmp_path / "tune.json").read_text())
    assert (result["queries"], result["skipped"]) == (len(eval_data.judged), eval_data.unjudged)
    grid = Grid(top_ks=(TOP_K,), fusions=("rrf",), rrf_ks=(60,), vector_weights=(0.5,))
    clean = tune(hs, eval_collection, messy_data.clean_queries, messy_data.clean_qrels, grid)
    [row] = result["rows"]
    assert {name: row[name] for name in clean.best.metrics} == pytest.approx(
        clean.best.metrics, abs=1e-9
    )
    skipped = {group["reason"]: group["count"] for group in result["input"]["skipped"]}
    assert skipped == messy_data.expected_skips
    assert result["input"]["missing_documents"]["count"] == 1
    assert_lists_skips(stdout, messy_data.expected_skips)


@pytest.mark.parametrize("command", ["eval", "tune"])
def test_files_with_nothing_usable_are_one_line_errors(
    database_url: str, eval_collection: str, eval_data: EvalData, command: str, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.txt"
    junk.write_text("not json\nnor\tthree\tcolumns\tof\tqrels\n")
    strangers = tmp_path / "strangers.tsv"
    strangers.write_text("query-id\tcorpus-id\tscore\nnobody\tdoc\t1\n")
    cases = [
        (junk, eval_data.qrels, f"{junk}: no usable query; skipped 2 × {beir.NOT_JSON}"),
        # the first line, its last column not a number, reads as the header
        (
            eval_data.queries,
            junk,
            f"{junk}: no usable judgment; skipped 1 × {beir.NOT_THREE_COLUMNS}",
        ),
        (eval_data.queries, strangers, "queries can be evaluated"),
    ]
    for queries, qrels, message in cases:
        code, _, stderr = run_cli(
            database_url,
            command,
            "--collection",
            eval_collection,
            "--queries",
            str(queries),
            "--qrels",
            str(qrels),
        )
        assert code == 2, stderr
        assert stderr.startswith("hybridsearch: error:") and stderr.count("\n") == 1
        assert message in stderr, stderr
