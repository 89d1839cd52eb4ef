"""The pieces of `train reranker` that need no database: the split, hard-negative groups,
Platt scaling and its folding into a real cross-encoder's head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridsearch.errors import InvalidInputError
from hybridsearch.models.reranker import combine_with_fused
from hybridsearch.models.training import _check_groups, _load_base
from hybridsearch.train.calibration import Calibration, fit_calibration, fold_into_head
from hybridsearch.train.mining import Candidate, positives, ranking_groups, split_queries
from hybridsearch.train.recipes import RerankerRecipe
from tests.model_fixtures import minilm_path


def test_split_is_by_query_seeded_and_disjoint() -> None:
    queries = {str(i): f"query {i}" for i in range(50)}
    train, held_out = split_queries(queries, 10, seed=3)
    assert len(held_out) == 10 and len(train) == 40
    assert not set(train) & set(held_out)
    assert set(train) | set(held_out) == set(queries)
    assert split_queries(queries, 10, seed=3) == (train, held_out)
    assert split_queries(queries, 10, seed=4)[1] != held_out
    # file order kept within each part
    assert list(train) == [q for q in queries if q in train]


def test_split_refuses_to_hold_out_everything() -> None:
    with pytest.raises(InvalidInputError, match="validation-queries"):
        split_queries({"a": "x", "b": "y"}, 2, seed=0)


def test_positive_is_each_relevant_documents_best_chunk() -> None:
    ranked = [
        Candidate("d1", "d1 chunk 2", 0.0),
        Candidate("r1", "r1 chunk 3", 0.0),
        Candidate("r1", "r1 chunk 1", 0.0),
        Candidate("r2", "r2 chunk 1", 0.0),
    ]
    assert positives(ranked, {"r1", "r2", "absent"}) == [ranked[1], ranked[3]]


def test_groups_take_hard_negatives_from_the_head_only() -> None:
    lists = {
        "q1": [Candidate(f"n{i}", f"neg {i}", 0.0) for i in range(3)]
        + [Candidate("r", "pos", 0.0)]
        + [Candidate(f"deep{i}", f"deep {i}", 0.0) for i in range(5)],
        "q2": [Candidate("x", "only one negative", 0.0), Candidate("r2", "pos2", 0.0)],
    }
    qrels = {"q1": {"r": 1, "n0": 0}, "q2": {"r2": 1}}
    groups = ranking_groups(
        {"q1": "first", "q2": "second"}, qrels, lists, negatives=2, depth=4, seed=0
    )
    # q2's head has one unjudged chunk, fewer than the two negatives asked for
    assert len(groups) == 1
    query, positive, negatives = groups[0]
    assert (query, positive) == ("first", "pos")
    assert len(negatives) == 2 and set(negatives) <= {"neg 0", "neg 1", "neg 2"}


def test_groups_must_have_equal_negatives() -> None:
    with pytest.raises(InvalidInputError, match="same number of negatives"):
        _check_groups([("q", "p", ["a"]), ("q", "p", ["a", "b"])])
    with pytest.raises(InvalidInputError, match="no training groups"):
        _check_groups([])
    with pytest.raises(InvalidInputError, match="group 0"):
        _check_groups([("q", 3, ["a"])])  # type: ignore[list-item]


def test_platt_recovers_the_generating_logistic() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, 20_000)
    slope, intercept = 0.5, -2.0
    labels = rng.random(logits.size) < 1 / (1 + np.exp(-(slope * logits + intercept)))
    fitted = fit_calibration(logits, labels.astype(float))
    assert fitted.slope == pytest.approx(slope, abs=0.05)
    assert fitted.intercept == pytest.approx(intercept, abs=0.1)


def test_calibration_weighs_the_fused_score_by_what_it_predicts() -> None:
    rng = np.random.default_rng(1)
    logits, fused = rng.normal(0.0, 2.0, 20_000), rng.normal(0.0, 1.0, 20_000)
    truth = 0.3 * logits + 1.5 * fused - 1.0
    labels = rng.random(logits.size) < 1 / (1 + np.exp(-truth))
    fitted = fit_calibration(logits, labels.astype(float), fused)
    assert fitted.slope == pytest.approx(0.3, abs=0.05)
    assert fitted.fused_weight == pytest.approx(1.5, abs=0.1)
    assert fitted.intercept == pytest.approx(-1.0, abs=0.1)


def test_combined_score_adds_the_weighted_fused_score_to_the_logit() -> None:
    scores = np.array([0.5, 0.9], dtype=np.float32)
    assert combine_with_fused(scores, [3.0, -1.0], 0.0) is scores
    combined = combine_with_fused(scores, [3.0, -1.0], 0.5)
    logit = np.log(scores / (1 - scores)) + 0.5 * np.array([3.0, -1.0])
    np.testing.assert_allclose(combined, 1 / (1 + np.exp(-logit)), rtol=1e-5)


def test_platt_stays_finite_on_separated_labels_and_refuses_one_class() -> None:
    fitted = fit_calibration([-2.0, -1.0, 1.0, 2.0], [0, 0, 1, 1])
    assert np.isfinite([fitted.slope, fitted.intercept]).all() and fitted.slope > 0
    with pytest.raises(InvalidInputError, match="relevant and non-relevant"):
        fit_calibration([0.1, 0.2], [1, 1])


def test_folded_head_outputs_the_calibrated_logit() -> None:
    model = _load_base(str(minilm_path()), 32, "cpu")
    pairs = [("otters", "sea otters use tools"), ("otters", "the stock market fell")]
    identity = torch.nn.Identity()
    before = np.asarray(model.predict(pairs, activation_fn=identity), dtype=np.float64)
    fold_into_head(model, Calibration(slope=-1.5, intercept=0.25))
    after = np.asarray(model.predict(pairs, activation_fn=identity), dtype=np.float64)
    np.testing.assert_allclose(after, -1.5 * before + 0.25, rtol=1e-4, atol=1e-5)


def test_recipe_bounds() -> None:
    RerankerRecipe().check()
    with pytest.raises(InvalidInputError, match="negative_depth"):
        RerankerRecipe(negatives=30, negative_depth=30).check()
    with pytest.raises(InvalidInputError, match="rerank_depth"):
        RerankerRecipe(rerank_depth=5).check()
    with pytest.raises(InvalidInputError, match="steps"):
        RerankerRecipe(steps=0).check()
