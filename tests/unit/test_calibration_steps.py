"""The calibration's pure steps: halves, ranks, BM25 over a sample, weights, when it is due."""

from __future__ import annotations

import numpy as np
import pytest

from hybridsearch import calibration
from hybridsearch.collections import Calibration, Collection, CollectionSettings


def test_halves_cut_at_a_space_near_the_middle() -> None:
    text = "alpha beta gamma delta epsilon zeta eta theta"
    first, second = calibration.halves(text) or ("", "")
    assert f"{first} {second}" == text
    assert abs(len(first) - len(second)) <= len(text) // 4


def test_halves_of_text_without_spaces_cut_at_the_middle() -> None:
    text = "向量数据库存储文本的向量表示通过近似最近邻搜索找到语义相近的内容"
    first, second = calibration.halves(text) or ("", "")
    assert first + second == text
    assert len(first) == len(text) // 2


@pytest.mark.parametrize("text", ["", "short", "   two words   ", "a" * 15])
def test_halves_refuse_text_too_short_to_say_anything(text: str) -> None:
    assert calibration.halves(text) is None


def test_reciprocal_ranks_count_ties_for_the_own_column_and_zero_when_nothing_shared() -> None:
    similarity = np.array([[0.9, 0.1, 0.2], [0.8, 0.5, 0.5], [0.3, 0.4, 0.0]])
    # row 0 ranks its own first; row 1 has one above and one tie; row 2 shares nothing
    assert calibration.reciprocal_ranks(similarity).tolist() == [1.0, 0.5, 0.0]


def test_bm25_finds_the_document_sharing_the_rare_terms() -> None:
    documents = [
        {"vitamin": 1, "deficiency": 2, "bone": 1},
        {"vitamin": 1, "heart": 1},
        {"cancer": 1, "cell": 3},
    ]
    queries = [{"vitamin": 1, "bone": 1}, {"heart": 1}, {"cell": 1}, {"unseen": 1}]
    scores = calibration.bm25_matrix(queries, documents, k1=1.2, b=0.75)
    assert scores.argmax(axis=1)[:3].tolist() == [0, 1, 2]
    assert scores[3].tolist() == [0.0, 0.0, 0.0]
    # a term in every document but one weighs less than a term in one document
    assert scores[0, 0] > scores[0, 1] > 0


def test_cosine_matrix_ignores_vector_length() -> None:
    queries = np.array([[1.0, 0.0], [0.0, 3.0]], dtype=np.float32)
    documents = np.array([[2.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    assert calibration.cosine_matrix(queries, documents) == pytest.approx(
        np.array([[1.0, 2**-0.5], [0.0, 2**-0.5]])
    )


@pytest.mark.parametrize(
    ("vector_mrr", "keyword_mrr", "expected"),
    [
        (0.92, 0.92, (1.0, 1.0)),  # both read the text
        (0.92, 0.46, (1.0, 0.25)),  # half as good counts a quarter
        (0.24, 0.73, (0.11, 1.0)),  # an English model on Chinese text
        (0.0, 0.9, (calibration.FLOOR_WEIGHT, 1.0)),  # still breaks ties
        (0.0, 0.0, (1.0, 1.0)),  # nothing to go on
    ],
)
def test_weights_follow_each_legs_mrr_relative_to_the_better(
    vector_mrr: float, keyword_mrr: float, expected: tuple[float, float]
) -> None:
    assert calibration.weights(vector_mrr, keyword_mrr) == expected


def test_calibration_records_what_it_measured() -> None:
    identity = np.eye(20)
    shuffled = np.roll(np.eye(20), 1, axis=1) + 0.5 * np.eye(20)  # own column second
    result = calibration.calibration(identity, shuffled, chunks=500)
    assert result == Calibration(
        vector_mrr=1.0, keyword_mrr=0.5, vector_weight=1.0, keyword_weight=0.25,
        sample=20, chunks=500,
    )  # fmt: skip


def _collection(calibrated_on: int | None) -> Collection:
    done = None
    if calibrated_on is not None:
        done = Calibration(0.9, 0.9, 1.0, 1.0, sample=100, chunks=calibrated_on)
    return Collection(
        collection_id=1,
        name="docs",
        embedding_model="m",
        dimensions=3,
        distance="cosine",
        analyzer="mixed",
        settings=CollectionSettings(calibration=done),
    )


@pytest.mark.parametrize(
    ("calibrated_on", "chunks", "due"),
    [
        (None, calibration.MIN_SAMPLE - 1, False),  # too few to say anything
        (None, calibration.MIN_SAMPLE, True),  # first sizeable ingest
        (1000, 1999, False),
        (1000, 2000, True),  # doubled since
    ],
)
def test_a_collection_is_due_when_first_sizeable_or_doubled(
    calibrated_on: int | None, chunks: int, due: bool
) -> None:
    assert calibration.should_calibrate(_collection(calibrated_on), chunks) is due


def test_settings_round_trip_their_calibration() -> None:
    stored = CollectionSettings(calibration=Calibration(0.9, 0.5, 1.0, 0.31, 100, 4000))
    assert CollectionSettings.from_json(stored.to_json()) == stored
