"""Rerank scores that mean the same thing for every query: Platt scaling folded into the head.

A reranker trained listwise learns only the order of one query's passages; its raw logits
drift by query and by training run (the issue's self-trained reranker gave 0.84-0.91 to
everything). A logistic fit ``p = sigmoid(a * logit + b)`` on held-out judged candidates
(Platt, 1999) turns them into estimated probabilities that a candidate's document is
judged relevant. ``a`` and ``b`` are folded into the classification head's last linear
layer (``w' = a w``, ``c' = a c + b``), so the saved model itself outputs the calibrated
logit and every runtime that loads it (sentence-transformers, the ONNX export, the
torch-free runtime) applies the same sigmoid and gives the same probability: nothing in
search has to know about calibration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch

from hybridsearch.errors import InvalidInputError, ModelError

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder


@dataclass(frozen=True)
class Platt:
    """``probability = sigmoid(slope * logit + intercept)``."""

    slope: float
    intercept: float


def fit_platt(
    logits: npt.ArrayLike, labels: npt.ArrayLike, *, iterations: int = 50, ridge: float = 1e-3
) -> Platt:
    """The logistic fit of ``labels`` (0/1) on ``logits``, by Newton's method.

    Platt's smoothed targets ((n+ + 1) / (n+ + 2) and 1 / (n- + 2)) keep the fit finite when
    the validation candidates are perfectly separated; the small ridge keeps the Hessian
    invertible.
    """
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if x.shape != y.shape or not np.isin(y, (0.0, 1.0)).all():
        raise InvalidInputError("calibration needs one 0/1 label per logit")
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    if positives == 0 or negatives == 0:
        raise InvalidInputError(
            "calibration needs relevant and non-relevant validation candidates; "
            "give more validation queries"
        )
    target = np.where(y > 0, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    design = np.stack([x, np.ones_like(x)], axis=1)
    theta = np.array([1.0, float(np.log((positives + 1) / (negatives + 1)))])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ theta)))
        gradient = design.T @ (p - target) + ridge * theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + ridge * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-9:
            break
    return Platt(float(theta[0]), float(theta[1]))


def fold_into_head(model: CrossEncoder, platt: Platt) -> None:
    """Rescale the one-logit head so the model outputs ``slope * logit + intercept``."""
    from hybridsearch.models.training import head_output_layer

    layer = head_output_layer(model)
    if layer is None or layer.out_features != 1 or layer.bias is None:
        raise ModelError("cannot calibrate this reranker: no one-logit linear head found")
    with torch.no_grad():
        layer.weight.mul_(platt.slope)
        layer.bias.mul_(platt.slope).add_(platt.intercept)
