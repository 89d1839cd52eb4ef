"""Calibration end to end: an ingest calibrates the fusion weights from what each leg
reads, explicit weights win, and SQL searches a collection with the service's defaults."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from hybridsearch import Document, HybridSearch
from hybridsearch.collections import CollectionSettings
from hybridsearch.eval.pipeline import PipelineConfig, evaluate_pipeline
from hybridsearch.eval.report import fusion_line
from hybridsearch.params import FUSION
from tests.model_fixtures import m3e_small_path, minilm_path, scifact_sample_documents

ZH_CORPUS = Path(__file__).resolve().parents[2] / "bench" / "data" / "zh" / "corpus.jsonl"


def _chinese(count: int) -> list[Document]:
    with ZH_CORPUS.open(encoding="utf-8") as lines:
        records = [json.loads(line) for line, _ in zip(lines, range(count), strict=False)]
    return [Document(r["_id"], f"{r['title']}\n{r['text']}".strip()) for r in records]


@pytest.fixture(scope="module")
def english(hs: HybridSearch, scifact_dir: Path) -> Iterator[str]:
    name = "calibration_en"
    hs.drop_collection(name)
    hs.create_collection(name, model=str(minilm_path()))
    _, _, docs = scifact_sample_documents(scifact_dir, slice(0, 5), distractors=40)
    report = hs.add_documents(name, docs)
    assert report.calibration is not None  # its first sizeable ingest
    yield name
    hs.drop_collection(name)


def test_an_ingest_calibrates_a_new_collection_whose_legs_both_read_it(
    hs: HybridSearch, english: str
) -> None:
    collection = hs.get_collection(english)
    measured = collection.settings.calibration
    assert measured is not None and measured.sample >= 16
    # MiniLM reads English and BM25 matches it: neither leg is turned down much
    assert min(measured.vector_weight, measured.keyword_weight) >= 0.7
    assert max(measured.vector_weight, measured.keyword_weight) == 1.0
    defaults = collection.fusion_defaults
    assert defaults.fusion == FUSION.default == "zscore"
    assert (defaults.vector_weight, defaults.keyword_weight) == (
        measured.vector_weight,
        measured.keyword_weight,
    )


def test_calibrating_the_same_data_again_measures_the_same(hs: HybridSearch, english: str) -> None:
    before = hs.get_collection(english).settings.calibration
    assert hs.calibrate(english) == before
    # not due: it has not grown
    assert hs.calibrate(english, force=False) is None


def test_sql_searches_a_collection_as_the_service_does(
    hs: HybridSearch, english: str, conn: psycopg.Connection
) -> None:
    query = "vitamin D and bone density"
    service = hs.search(english, query, top_k=20, top_n=5, rerank=False)
    embedding = hs.embedder(hs.get_collection(english)).embed_query(query)
    rows = conn.execute(
        "SELECT chunk_id, fused_score FROM hybridsearch.search_hybrid(%s, %s, %s, 20)"
        " ORDER BY fused_rank",
        (english, embedding, query),
    ).fetchall()
    assert [r[0] for r in rows] == [h.chunk_id for h in service.candidates]
    assert [r[1] for r in rows] == pytest.approx([h.scores.fused for h in service.candidates])


def test_weights_set_in_the_settings_win_over_the_calibration(
    hs: HybridSearch, english: str
) -> None:
    hs.update_collection_settings(english, vector_weight=0.3)
    try:
        collection = hs.get_collection(english)
        assert collection.settings.calibration is not None
        assert collection.fusion_defaults.vector_weight == 0.3
        assert (
            collection.fusion_defaults.keyword_weight
            == collection.settings.calibration.keyword_weight
        )
    finally:
        hs.update_collection_settings(english, vector_weight=None)
    assert hs.get_collection(english).fusion_defaults.vector_weight == (
        hs.get_collection(english).settings.calibration.vector_weight  # type: ignore[union-attr]
    )


@pytest.mark.parametrize(("model", "reads_it"), [(minilm_path, False), (m3e_small_path, True)])
def test_a_model_that_cannot_read_the_text_counts_for_less(
    hs: HybridSearch, model: object, reads_it: bool
) -> None:
    name = f"calibration_zh_{'reads' if reads_it else 'blind'}"
    hs.drop_collection(name)
    try:
        hs.create_collection(name, model=str(model()))  # type: ignore[operator]
        report = hs.add_documents(name, _chinese(48))
        measured = report.calibration
        assert measured is not None
        if reads_it:  # m3e-small reads Chinese
            assert measured.vector_weight == 1.0
        else:  # all-MiniLM-L6-v2 reads English only: its vector leg is near random
            assert measured.vector_weight < 0.5 and measured.keyword_weight == 1.0
            assert measured.vector_mrr < measured.keyword_mrr / 1.5
    finally:
        hs.drop_collection(name)


def test_a_collection_too_small_to_measure_keeps_weights_of_1(hs: HybridSearch) -> None:
    name = "calibration_tiny"
    hs.drop_collection(name)
    try:
        hs.create_collection(name, model=str(minilm_path()))
        report = hs.add_documents(name, _chinese(3))
        assert report.calibration is None
        assert hs.calibrate(name) is None  # too few chunks even when asked
        defaults = hs.get_collection(name).fusion_defaults
        assert (defaults.vector_weight, defaults.keyword_weight) == (1.0, 1.0)
    finally:
        hs.drop_collection(name)


def test_collections_created_before_calibration_keep_their_stored_weights(
    hs: HybridSearch,
) -> None:
    name = "calibration_stored"
    hs.drop_collection(name)
    try:
        # what 0.1.0 stored: every setting, the weights included
        settings = CollectionSettings(fusion="rrf", vector_weight=1.0, keyword_weight=1.0)
        hs.create_collection(name, model=str(minilm_path()), settings=settings)
        hs.add_documents(name, _chinese(40))
        collection = hs.get_collection(name)
        assert collection.settings.calibration is not None
        assert collection.fusion_defaults.fusion == "rrf"
        assert collection.fusion_defaults.vector_weight == 1.0
    finally:
        hs.drop_collection(name)


def test_eval_reports_the_fusion_and_where_its_weights_came_from(
    hs: HybridSearch, english: str, scifact_dir: Path
) -> None:
    chosen, qrels, _ = scifact_sample_documents(scifact_dir, slice(0, 5), distractors=40)
    measured = hs.get_collection(english).settings.calibration
    assert measured is not None
    evaluation = evaluate_pipeline(hs, english, chosen, qrels, stages=("hybrid",), ks=(10,))
    assert evaluation.config["fusion"] == "zscore"
    assert evaluation.config["weights_from"] == "calibration"
    assert evaluation.config["keyword_weight"] == measured.keyword_weight
    assert f"keyword {measured.keyword_weight:g} (from calibration)" in fusion_line(evaluation)
    given = evaluate_pipeline(
        hs, english, chosen, qrels, stages=("hybrid",), ks=(10,),
        config=PipelineConfig(fusion="rrf", vector_weight=1.0, keyword_weight=1.0),
    )  # fmt: skip
    assert "rrf, rrf_k 60, weights vector 1, keyword 1 (from given)" in fusion_line(given)
