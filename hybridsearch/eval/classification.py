"""Classification of labelled texts by their embeddings: logistic regression, cross-validated.

The texts are embedded once (as documents, L2-normalised); a logistic regression is trained
on the embeddings of k-1 folds and scored on the held-out fold, for each of k stratified
folds (every fold keeps the labels' proportions). Accuracy and macro-F1 (the mean of the
per-label F1, so a small label weighs as much as a large one) are reported as the mean over
the folds with their standard deviation, the spread that says how far one figure can be
trusted on a small set.

k: each fold must hold at least one text of every label, so k is at most the size of the
smallest label. By default k = min(:data:`MAX_FOLDS`, smallest label's size): five folds
where the data allows (the usual choice: 80 % to train on), fewer on a small set. A label
with a single text cannot be both trained on and tested, so it is an error, as is an
explicit k larger than the smallest label.

The control is the majority-class classifier under the same folds: what predicting the
largest label for everything scores on this very set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from hybridsearch.errors import InvalidInputError
from hybridsearch.eval.beir import InputReport
from hybridsearch.eval.embedder_tasks import DocumentEmbedder, unit_rows
from hybridsearch.eval.labelled import LabelledTexts
from hybridsearch.eval.optional import import_eval_dependency

#: The most folds chosen by default; see the module's notes.
MAX_FOLDS = 5
#: Enough iterations for lbfgs to converge on sentence embeddings (100 warns on some sets).
MAX_ITER = 1000
METRICS = ("accuracy", "macro_f1")


def choose_folds(counts: dict[str, int], folds: int | None = None) -> int:
    """The number of folds: ``folds`` if every label can fill it, else the default rule."""
    smallest_label, smallest = min(counts.items(), key=lambda item: (item[1], item[0]))
    if smallest < 2:
        raise InvalidInputError(
            f"label {smallest_label!r} has {smallest} text; cross-validation needs at least "
            "2 texts of every label (one to train on, one to test): add texts or drop the label"
        )
    if folds is None:
        return min(MAX_FOLDS, smallest)
    if folds < 2:
        raise InvalidInputError(f"cross-validation needs at least 2 folds, got {folds}")
    if folds > smallest:
        raise InvalidInputError(
            f"{folds} folds need at least {folds} texts of every label, but label "
            f"{smallest_label!r} has {smallest}: pass --folds {smallest} or fewer, or add texts"
        )
    return folds


@dataclass(frozen=True)
class Spread:
    """A figure per fold, its mean and its standard deviation (population, over folds)."""

    folds: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.folds))

    @property
    def std(self) -> float:
        return float(np.std(self.folds))

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.std:.4f}"

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "folds": list(self.folds)}


@dataclass(frozen=True)
class ClassificationEvaluation:
    """Cross-validated scores of a logistic regression, and of the majority-class control."""

    items: int
    labels: int
    folds: int
    seed: int
    scores: dict[str, Spread]
    control: dict[str, Spread]
    label_counts: dict[str, int]
    input: InputReport = field(default_factory=InputReport)

    task: ClassVar[str] = "classification"

    def table(self) -> tuple[list[str], list[list[str]]]:
        rows = [[m, str(self.scores[m]), str(self.control[m])] for m in METRICS]
        return ["metric", "model (mean ± std)", "majority class"], rows

    def series(self) -> dict[str, dict[str, float]]:
        return {
            "model": {m: s.mean for m, s in self.scores.items()},
            "majority class": {m: s.mean for m, s in self.control.items()},
        }

    def summary(self) -> str:
        return (
            f"{self.items} texts, {self.labels} labels; logistic regression, "
            f"{self.folds}-fold stratified cross-validation, seed {self.seed}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "items": self.items,
            "labels": self.labels,
            "label_counts": self.label_counts,
            "folds": self.folds,
            "seed": self.seed,
            "scores": {m: s.to_dict() for m, s in self.scores.items()},
            "control": {m: s.to_dict() for m, s in self.control.items()},
            "input": self.input.to_dict(),
        }


def evaluate_classification(
    embedder: DocumentEmbedder,
    data: LabelledTexts,
    *,
    folds: int | None = None,
    seed: int = 0,
) -> ClassificationEvaluation:
    """Embed ``data``'s texts and cross-validate a logistic regression on them."""
    data.require_labels("classification")
    counts = dict(sorted(data.counts().items()))
    k = choose_folds(counts, folds)
    selection = import_eval_dependency("sklearn.model_selection", "classification evaluation")
    linear = import_eval_dependency("sklearn.linear_model", "classification evaluation")
    dummy = import_eval_dependency("sklearn.dummy", "classification evaluation")
    metrics = import_eval_dependency("sklearn.metrics", "classification evaluation")

    vectors = unit_rows(embedder.embed_documents(list(data.texts)))
    labels = np.array(data.labels)
    splitter = selection.StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    model_folds: dict[str, list[float]] = {m: [] for m in METRICS}
    control_folds: dict[str, list[float]] = {m: [] for m in METRICS}
    for train, test in splitter.split(vectors, labels):
        for classifier, scores in (
            (linear.LogisticRegression(max_iter=MAX_ITER), model_folds),
            (dummy.DummyClassifier(strategy="most_frequent"), control_folds),
        ):
            predicted = classifier.fit(vectors[train], labels[train]).predict(vectors[test])
            scores["accuracy"].append(float(metrics.accuracy_score(labels[test], predicted)))
            scores["macro_f1"].append(
                float(
                    metrics.f1_score(
                        labels[test],
                        predicted,
                        labels=list(counts),
                        average="macro",
                        zero_division=0,
                    )
                )
            )
    return ClassificationEvaluation(
        items=len(data.texts),
        labels=len(counts),
        folds=k,
        seed=seed,
        scores={m: Spread(tuple(v)) for m, v in model_folds.items()},
        control={m: Spread(tuple(v)) for m, v in control_folds.items()},
        label_counts=counts,
        input=data.input,
    )
