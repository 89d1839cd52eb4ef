"""Rerank scores that mean the same thing for every query: the estimated probability that a
candidate's document is relevant, given the cross-encoder and the fused score.

A reranker trained listwise learns only the order of one query's passages; its raw logits
drift by query and by training run (the issue's self-trained reranker gave 0.84-0.91 to
everything). A logistic regression on held-out judged candidates,
``p = sigmoid(slope * logit + fused_weight * fused + intercept)`` (Platt scaling, with the
fused score as a second input), turns them into probabilities. The fused score is in it
because it is evidence too: a small cross-encoder trained for minutes knows less than the
fusion of two retrievals on some queries, and the fit weighs the two by what they predict
on the validation queries, so a weak reranker can still only add to the fused order
(bench/NOTES.md, "Training a reranker").

``slope`` and ``intercept`` are folded into the classification head's last linear layer
(``w' = slope w``, ``c' = slope c + intercept``), so the saved model outputs the calibrated
logit in every runtime that loads it. ``fused_weight`` and the fusion method it was fitted
for are stored next to the weights (:data:`RERANK_FILE`) and applied by
:func:`hybridsearch.models.reranker.combine_with_fused` in search and evaluation alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch

from hybridsearch.errors import InvalidInputError, ModelError
from hybridsearch.models.reranker import RERANK_FILE

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder


@dataclass(frozen=True)
class Calibration:
    """``probability = sigmoid(slope * logit + fused_weight * fused + intercept)``."""

    slope: float
    intercept: float
    fused_weight: float = 0.0


def fit_calibration(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    fused: npt.ArrayLike | None = None,
    *,
    iterations: int = 100,
    ridge: float = 1e-3,
) -> Calibration:
    """The logistic fit of ``labels`` (0/1) on ``logits`` (and ``fused``), by Newton's method.

    Platt's smoothed targets ((n+ + 1) / (n+ + 2) and 1 / (n- + 2)) keep the fit finite when
    the validation candidates are perfectly separated; the small ridge keeps the Hessian
    invertible. Without ``fused`` it is plain Platt scaling (``fused_weight`` 0).
    """
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    f = np.zeros_like(x) if fused is None else np.asarray(fused, dtype=np.float64).reshape(-1)
    if x.shape != y.shape or f.shape != x.shape or not np.isin(y, (0.0, 1.0)).all():
        raise InvalidInputError("calibration needs one 0/1 label (and fused score) per logit")
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    if positives == 0 or negatives == 0:
        raise InvalidInputError(
            "calibration needs relevant and non-relevant validation candidates; "
            "give more validation queries"
        )
    target = np.where(y > 0, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    design = np.stack([x, f, np.ones_like(x)], axis=1)
    theta = np.array([1.0, 0.0, float(np.log((positives + 1) / (negatives + 1)))])
    penalty = ridge * np.eye(3)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ theta)))
        gradient = design.T @ (p - target) + penalty @ theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + penalty
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-9:
            break
    return Calibration(float(theta[0]), float(theta[2]), float(theta[1]))


def fold_into_head(model: CrossEncoder, calibration: Calibration) -> None:
    """Rescale the one-logit head so the model outputs ``slope * logit + intercept``."""
    from hybridsearch.models.training import head_output_layer

    layer = head_output_layer(model)
    if layer is None or layer.out_features != 1 or layer.bias is None:
        raise ModelError("cannot calibrate this reranker: no one-logit linear head found")
    with torch.no_grad():
        layer.weight.mul_(calibration.slope)
        layer.bias.mul_(calibration.slope).add_(calibration.intercept)


def write_rerank_settings(folder: Path, calibration: Calibration, fusion: str) -> None:
    """What search needs besides the weights: the fused score's weight, for which fusion."""
    settings = {"fused_weight": calibration.fused_weight, "fusion": fusion}
    (folder / RERANK_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")
