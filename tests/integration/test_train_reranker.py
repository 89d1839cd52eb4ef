"""`hybridsearch train reranker` end to end on a small SciFact collection, through the CLI:
hard negatives mined by search, a seeded validation split, the closing table, calibrated
scores, and `search --show-stages` with the trained model."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hybridsearch import HybridSearch, Reranker, Settings
from hybridsearch.eval.beir import load_qrels, load_queries
from hybridsearch.models.reranker import RERANK_FILE
from hybridsearch.train.mining import split_queries
from hybridsearch.train.recipes import RECORD_FILE
from tests.cli_support import run_cli
from tests.integration.conftest import JUDGED_QUERIES as QUERIES

VALIDATION = 10
TINY_RECIPE = (
    "--steps", "6", "--batch-size", "2", "--negatives", "3", "--negative-depth", "10",
    "--max-length", "48", "--validation-queries", str(VALIDATION), "--validate-every", "3",
    "--patience", "0", "--rerank-depth", "10",
)  # fmt: skip


@pytest.fixture(scope="module")
def trained(
    cli_env: dict[str, str],
    judged: tuple[str, Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    name, queries, qrels = judged
    out = tmp_path_factory.mktemp("model") / "reranker"
    done = run_cli(
        cli_env, "train", "reranker", "--collection", name, "--queries", str(queries),
        "--qrels", str(qrels), "--out", str(out), *TINY_RECIPE,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out, done


def test_closing_table_compares_fused_and_reranked_on_held_out_queries(
    trained: tuple[Path, subprocess.CompletedProcess[str]], judged: tuple[str, Path, Path]
) -> None:
    out, done = trained
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"validation: {VALIDATION} held-out queries")
    header = lines[1].split()
    assert header == ["metric", "fused", "reranked"]
    ndcg = next(line.split() for line in lines if line.startswith("ndcg@10"))
    fused, reranked = float(ndcg[1]), float(ndcg[2])
    assert 0 <= fused <= 1 and 0 <= reranked <= 1
    assert f"reranked - fused = {reranked - fused:+.4f}" in done.stdout

    record = json.loads((out / RECORD_FILE).read_text())
    _, queries, _ = judged
    held_out = split_queries(load_queries(queries), VALIDATION, seed=0)[1]
    assert record["validation_query_ids"] == sorted(held_out)
    assert record["train_queries"] == QUERIES.stop - VALIDATION
    assert record["validation"]["hybrid"]["ndcg@10"] == pytest.approx(fused, abs=5e-5)
    # validated every 3 steps; the kept step is the best of them
    steps = [step for step, _ in record["log"]["validations"]]
    assert steps == [3, 6]
    best = max(score for _, score in record["log"]["validations"])
    assert dict(record["log"]["validations"])[record["log"]["best_step"]] == best


def test_scores_are_probabilities_calibrated_on_the_validation_candidates(
    trained: tuple[Path, subprocess.CompletedProcess[str]],
    judged: tuple[str, Path, Path],
    settings: Settings,
) -> None:
    """The logistic fit matches the mean predicted probability to the (smoothed) rate of
    relevant candidates on the data it was fitted on: the validation queries' first 10
    fused candidates, scored as search scores them (cross-encoder and fused score)."""
    out, _ = trained
    name, queries_file, qrels_file = judged
    stored = json.loads((out / RERANK_FILE).read_text())
    assert stored["fusion"] == "zscore" and isinstance(stored["fused_weight"], float)
    queries, qrels = load_queries(queries_file), load_qrels(qrels_file)
    held_out = split_queries(queries, VALIDATION, seed=0)[1]
    reranker = Reranker(str(out), backend="torch", max_length=48)
    probabilities: list[float] = []
    labels: list[int] = []
    with HybridSearch(settings, reranker=reranker) as hs:
        for qid, text in held_out.items():
            result = hs.search(
                name, text, top_k=50, top_n=10, rerank_depth=10, one_per_document=False
            )
            assert result.reranked
            probabilities.extend(h.scores.rerank for h in result.results)  # type: ignore[misc]
            labels.extend(int(qrels[qid].get(h.document_id, 0) > 0) for h in result.results)
    assert all(0 < p < 1 for p in probabilities)
    positives, negatives = sum(labels), len(labels) - sum(labels)
    smoothed = (
        positives * (positives + 1) / (positives + 2) + negatives * 1 / (negatives + 2)
    ) / len(labels)
    assert np.mean(probabilities) == pytest.approx(smoothed, abs=0.02)


def test_show_stages_marks_judged_documents_in_both_orders(
    cli_env: dict[str, str],
    trained: tuple[Path, subprocess.CompletedProcess[str]],
    judged: tuple[str, Path, Path],
) -> None:
    out, _ = trained
    name, queries_file, qrels_file = judged
    qid, text = next(iter(load_queries(queries_file).items()))
    relevant = sorted(load_qrels(qrels_file)[qid])
    done = run_cli(
        cli_env, "search", "--collection", name, "--reranker", str(out), "--top-n", "3",
        "--show-stages", "--relevant", ",".join(relevant), text,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"query: {text}"
    assert lines[1].split() == ["rank", "fused", "(score)", "reranked", "(score)"]
    rows = lines[2:5]
    assert [row.split()[0] for row in rows] == ["1", "2", "3"]
    # every row has a fused and a reranked document; marks only on judged documents
    cells = [cell for row in rows for cell in row.split()[1::2]]
    assert len(cells) == 6
    for cell in cells:
        assert cell.startswith("*") == (cell.lstrip("*") in relevant)
    assert lines[5].startswith("* judged relevant")


def test_refuses_judgments_of_another_collection(
    cli_env: dict[str, str], judged: tuple[str, Path, Path], tmp_path: Path
) -> None:
    name, queries, _ = judged
    qrels = tmp_path / "other.tsv"
    qrels.write_text(
        "query-id\tcorpus-id\tscore\n"
        + "".join(f"{q}\tnot-in-this-collection\t1\n" for q in load_queries(queries))
    )
    done = run_cli(
        cli_env, "train", "reranker", "--collection", name, "--queries", str(queries),
        "--qrels", str(qrels), "--out", str(tmp_path / "m"), *TINY_RECIPE,
    )  # fmt: skip
    assert done.returncode == 2
    assert "no training examples" in done.stderr and "qrels" in done.stderr
    assert not (tmp_path / "m").exists()


def test_refuses_a_validation_split_that_leaves_nothing_to_train(
    cli_env: dict[str, str], judged: tuple[str, Path, Path], tmp_path: Path
) -> None:
    name, queries, qrels = judged
    done = run_cli(
        cli_env, "train", "reranker", "--collection", name, "--queries", str(queries),
        "--qrels", str(qrels), "--out", str(tmp_path / "m"), "--validation-queries", "30",
    )  # fmt: skip
    assert done.returncode == 2
    assert "--validation-queries" in done.stderr
