"""Embedding-model tasks without a model: metrics by hand, input handling, retrieval, drop.

Where a task needs vectors, a bag-of-words embedder over a fixed vocabulary stands in for
the model: the model is not under test here, and its cosines can be computed by hand.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from hybridsearch.errors import ConfigurationError, InvalidInputError
from hybridsearch.eval import evaluate_embedder
from hybridsearch.eval.beir import InputReport
from hybridsearch.eval.classification import MAX_FOLDS, choose_folds
from hybridsearch.eval.clustering import ClusteringEvaluation, clustering_scores
from hybridsearch.eval.domain import evaluate_domain, exact_top_k, load_beir_folder
from hybridsearch.eval.embedder_report import markdown_report, plot_bars
from hybridsearch.eval.labelled import (
    EMPTY_TEXT,
    NOT_JSON,
    NOT_LABELLED,
    LabelledTexts,
    load_labelled,
)
from hybridsearch.loaders import SkipLog

# -- clustering metrics ---------------------------------------------------------------------


def test_perfect_clusters_score_one_whatever_their_ids() -> None:
    scores = clustering_scores(["a", "a", "b", "b", "c"], [7, 7, 2, 2, 0])
    assert scores == pytest.approx({"purity": 1, "nmi": 1, "ari": 1, "v_measure": 1})


def test_clustering_scores_match_hand_computed_values() -> None:
    # labels a a a b b b; clusters {a, a} and {a, b, b, b}
    labels = ["a", "a", "a", "b", "b", "b"]
    clusters = [0, 0, 1, 1, 1, 1]
    scores = clustering_scores(labels, clusters)
    assert scores["purity"] == pytest.approx((2 + 3) / 6)
    # ARI: pairs within cells C(2,2)+C(1,2)+C(3,2) = 4; rows C(3,2)*2 = 6; columns
    # C(2,2)+C(4,2) = 7; expected 6*7/C(6,2) = 2.8; maximum (6+7)/2
    assert scores["ari"] == pytest.approx((4 - 2.8) / (6.5 - 2.8))
    # NMI: mutual information over the arithmetic mean of the two entropies
    cells = [(2 / 6, 1 / 2, 2 / 6), (1 / 6, 1 / 2, 4 / 6), (3 / 6, 1 / 2, 4 / 6)]
    mutual = sum(p * math.log(p / (row * col)) for p, row, col in cells)
    h_labels = math.log(2)
    h_clusters = -(1 / 3 * math.log(1 / 3) + 2 / 3 * math.log(2 / 3))
    assert scores["nmi"] == pytest.approx(mutual / ((h_labels + h_clusters) / 2))
    assert scores["v_measure"] == pytest.approx(scores["nmi"])


def test_one_cluster_for_two_balanced_labels_has_no_information() -> None:
    scores = clustering_scores(["a", "b", "a", "b"], [0, 0, 0, 0])
    assert scores["purity"] == pytest.approx(0.5)
    assert scores["nmi"] == pytest.approx(0)
    assert scores["ari"] == pytest.approx(0)


def test_purity_counts_each_clusters_commonest_label_not_each_labels_cluster() -> None:
    # two labels merged into cluster 0: purity (2 + 2) / 6, though every label stays whole
    scores = clustering_scores(["a", "a", "b", "b", "c", "c"], [0, 0, 0, 0, 1, 1])
    assert scores["purity"] == pytest.approx(4 / 6)


def test_clustering_scores_refuse_mismatched_input() -> None:
    with pytest.raises(InvalidInputError, match="one cluster per label"):
        clustering_scores(["a", "b"], [0])


def test_without_scikit_learn_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.metrics", None)
    with pytest.raises(ConfigurationError, match=r"needs sklearn.*hybridsearch\[eval\]"):
        clustering_scores(["a", "b"], [0, 1])


# -- folds --------------------------------------------------------------------------------


def test_folds_default_to_five_or_the_smallest_label() -> None:
    assert choose_folds({"a": 40, "b": 9}) == MAX_FOLDS == 5
    assert choose_folds({"a": 40, "b": 3}) == 3
    assert choose_folds({"a": 4, "b": 3}, folds=2) == 2


@pytest.mark.parametrize(
    ("counts", "folds", "message"),
    [
        ({"a": 5, "lonely": 1}, None, "label 'lonely' has 1 text"),
        ({"a": 5, "b": 3}, 4, "label 'b' has 3: pass --folds 3 or fewer"),
        ({"a": 5, "b": 3}, 1, "at least 2 folds"),
    ],
)
def test_folds_that_cannot_hold_every_label_are_refused(
    counts: dict[str, int], folds: int | None, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        choose_folds(counts, folds)


# -- labelled input -----------------------------------------------------------------------


def test_bad_lines_are_skipped_counted_and_the_rest_kept(tmp_path: Path) -> None:
    path = tmp_path / "texts.jsonl"
    lines = [
        json.dumps({"text": "bread", "label": "food"}).encode(),
        b"{not json",
        json.dumps({"text": "goal", "label": 3}).encode(),
        json.dumps({"text": "no label"}).encode(),
        json.dumps({"text": "flag", "label": True}).encode(),
        json.dumps({"text": "   ", "label": "food"}).encode(),
        b"",
        json.dumps({"text": "\u661f\u7cfb", "label": "\u5929\u6587"}, ensure_ascii=False).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    log = SkipLog()
    data = load_labelled(path, log)
    assert data.texts == ("bread", "goal", "\u661f\u7cfb")
    assert data.labels == ("food", "3", "\u5929\u6587")
    reasons = {group.reason: group.count for group in data.input.skipped}
    assert reasons == {NOT_JSON: 1, NOT_LABELLED: 2, EMPTY_TEXT: 1}
    assert data.input.skipped[0].examples == (f"{path}:2",)


def test_a_file_with_nothing_usable_says_what_was_wrong(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(InvalidInputError, match="holds no labelled text"):
        load_labelled(empty, SkipLog())
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x"}\n')
    with pytest.raises(InvalidInputError, match=r"no usable labelled text; skipped 1 ×"):
        load_labelled(bad, SkipLog())
    with pytest.raises(InvalidInputError, match=r"labelled texts file .* does not exist"):
        load_labelled(tmp_path / "missing.jsonl")


def test_one_label_is_refused() -> None:
    data = LabelledTexts.of([("a", "x"), ("b", "x")])
    with pytest.raises(InvalidInputError, match="at least 2 labels; all 2 texts have label 'x'"):
        data.require_labels("clustering")


def test_options_of_another_task_are_refused_before_any_model_loads(tmp_path: Path) -> None:
    data = tmp_path / "texts.jsonl"
    data.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    with pytest.raises(InvalidInputError, match="general is an option of the domain task"):
        evaluate_embedder("clustering", data, general=tmp_path)
    with pytest.raises(InvalidInputError, match="folds is an option of the classification"):
        evaluate_embedder("clustering", data, folds=2)
    with pytest.raises(InvalidInputError, match="unknown task 'topics'"):
        evaluate_embedder("topics", data)
    with pytest.raises(InvalidInputError, match="needs a general set"):
        evaluate_embedder("domain", tmp_path)
    with pytest.raises(InvalidInputError, match="more texts than labels"):
        evaluate_embedder("clustering", data)
    with pytest.raises(InvalidInputError, match="label 'x' has 1 text"):
        evaluate_embedder("classification", data)


# -- retrieval and the domain check -------------------------------------------------------


def test_exact_top_k_ranks_by_cosine_with_ties_in_index_order() -> None:
    documents = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [0.0, 5.0]])
    queries = np.array([[1.0, 0.1], [0.0, 1.0]])
    first, second = exact_top_k(queries, documents, 3)
    assert [i for i, _ in first] == [0, 2, 1]
    assert first[0][1] == pytest.approx(1 / math.sqrt(1.01))
    assert first[1][1] == pytest.approx(1.1 / (math.sqrt(1.01) * math.sqrt(2)))
    assert [i for i, _ in second] == [1, 3, 2]  # 1 and 3 tie at cosine 1
    assert len(exact_top_k(queries, documents, 10)[0]) == 4


class BagOfWords:
    """Word counts over a fixed vocabulary: cosines anyone can compute by hand."""

    def __init__(self, vocabulary: Sequence[str]) -> None:
        self.index = {word: i for i, word in enumerate(vocabulary)}

    def embed_documents(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        vectors = np.zeros((len(texts), len(self.index)), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                if word in self.index:
                    vectors[row, self.index[word]] += 1
        return vectors

    embed_queries = embed_documents


def _beir(folder: Path, docs: dict[str, str], queries: dict[str, str], qrels: str) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in docs.items())
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items())
    )
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return folder


def test_domain_drop_is_general_minus_domain(tmp_path: Path) -> None:
    general = _beir(
        tmp_path / "general",
        {"d1": "sourdough bread starter", "d2": "football match goal", "d3": "galaxy star"},
        {"q1": "bread starter", "q2": "football goal"},
        "q1\td1\t1\nq2\td2\t1\nq2\td9\tnot-a-number\n",
    )
    # p1 shares no word with its relevant e1: e2 (cosine 0.71) and e3 (0.41) come first
    domain = _beir(
        tmp_path / "domain",
        {
            "e1": "myocardial infarction troponin",
            "e2": "heart attack chest pain",
            "e3": "troponin assay heart",
        },
        {"p1": "heart attack", "p2": "troponin assay"},
        "p1\te1\t1\np2\te3\t1\n",
    )
    words = "sourdough bread starter football match goal galaxy star myocardial infarction "
    embedder = BagOfWords((words + "troponin heart attack chest pain assay").split())
    result = evaluate_domain(
        embedder,
        load_beir_folder(general),
        load_beir_folder(domain),
        metrics=["ndcg@10", "mrr@10", "recall@10"],
    )
    assert result.general.metrics == pytest.approx({"ndcg@10": 1, "mrr@10": 1, "recall@10": 1})
    # p1's relevant document at rank 3, p2's at rank 1
    ndcg = (1 / math.log2(4) + 1) / 2
    assert result.domain.metrics == pytest.approx(
        {"ndcg@10": ndcg, "mrr@10": (1 / 3 + 1) / 2, "recall@10": 1}
    )
    assert result.drop == pytest.approx(
        {m: result.general.metrics[m] - result.domain.metrics[m] for m in result.drop}
    )
    assert result.drop["ndcg@10"] == pytest.approx(1 - ndcg)
    assert result.relative_drop["mrr@10"] == pytest.approx(1 - 2 / 3)
    assert [g.count for g in result.input.skipped] == [1]  # the general set's bad qrels line
    assert (result.general.documents, result.general.queries) == (3, 2)


def test_a_folder_without_the_split_names_the_splits_it_has(tmp_path: Path) -> None:
    folder = _beir(tmp_path / "set", {"d1": "x"}, {"q1": "x"}, "q1\td1\t1\n")
    with pytest.raises(InvalidInputError, match=r"no qrels/dev.tsv \(splits found: test\)"):
        load_beir_folder(folder, "dev")
    with pytest.raises(InvalidInputError, match=r"BEIR folder .* does not exist"):
        load_beir_folder(tmp_path / "nowhere")


# -- report -------------------------------------------------------------------------------


def test_report_and_plot_show_the_figures(tmp_path: Path) -> None:
    result = ClusteringEvaluation(
        items=6,
        labels=2,
        seed=0,
        scores={"purity": 1.0, "nmi": 1.0, "ari": 1.0, "v_measure": 1.0},
        control={"purity": 0.6, "nmi": 0.1, "ari": -0.2, "v_measure": 0.1},
        label_counts={"a": 3, "b": 3},
        input=InputReport.build(SkipLog(strict=False), []),
    )
    plot = plot_bars(result.series(), tmp_path / "out" / "bars.png", title="t")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = markdown_report(result, "some-model", Path("bars.png"))
    assert "# Clustering of embedding model `some-model`" in report
    assert "| ari | 1.0000 | -0.2000 |" in report
    assert "![clustering figures](bars.png)" in report
