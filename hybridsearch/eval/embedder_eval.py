"""Evaluate an embedding model beyond retrieval: one entry point for every task.

:func:`evaluate_embedder` reads a task's input files and runs it:

* ``clustering`` (:mod:`~hybridsearch.eval.clustering`) and ``classification``
  (:mod:`~hybridsearch.eval.classification`): labelled texts, JSONL with ``text`` and
  ``label`` (:mod:`~hybridsearch.eval.labelled`);
* ``sts``: sentence pairs with human scores, the TSV ``hybridsearch eval-sts`` reads, scored by
  the same :func:`~hybridsearch.eval.models.evaluate_sts`;
* ``domain`` (:mod:`~hybridsearch.eval.domain`): two BEIR folders, a general one and the
  user's domain.

The task modules' functions take texts already in memory, for callers who have them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hybridsearch.errors import InvalidInputError
from hybridsearch.eval.beir import InputReport
from hybridsearch.eval.embedder_tasks import TASKS, TaskResult

if TYPE_CHECKING:
    from collections.abc import Sequence

    from hybridsearch.eval.models import StsEvaluation
    from hybridsearch.models.embedder import Embedder


@dataclass(frozen=True)
class StsResult:
    """:class:`~hybridsearch.eval.models.StsEvaluation` presented as a task result."""

    sts: StsEvaluation
    input: InputReport = field(default_factory=InputReport)

    task: ClassVar[str] = "sts"

    def table(self) -> tuple[list[str], list[list[str]]]:
        return ["metric", "model"], [
            ["spearman", f"{self.sts.spearman:.4f}"],
            ["pearson", f"{self.sts.pearson:.4f}"],
        ]

    def series(self) -> dict[str, dict[str, float]]:
        return {"model": {"spearman": self.sts.spearman, "pearson": self.sts.pearson}}

    def summary(self) -> str:
        return f"{self.sts.pairs} sentence pairs; cosine similarity against the human scores"

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, **self.sts.to_dict()}


def _embedder(model: Embedder | str | None) -> Embedder:
    """``model`` itself, or the embedder of that name (the settings' model when None)."""
    from hybridsearch.config import Settings
    from hybridsearch.models.configured import configured_embedder
    from hybridsearch.models.embedder import Embedder

    if isinstance(model, Embedder):
        return model
    settings = Settings.from_env()
    return configured_embedder(model or settings.embedding_model, settings)


def evaluate_embedder(
    task: str,
    data: str | Path,
    *,
    model: Embedder | str | None = None,
    general: str | Path | None = None,
    split: str = "test",
    general_split: str | None = None,
    metrics: Sequence[str] | None = None,
    folds: int | None = None,
    seed: int = 0,
) -> TaskResult:
    """Run ``task`` on ``data`` with ``model`` (an Embedder, a name or path, or the default).

    ``data``: the labelled JSONL (clustering, classification), the STS pairs TSV (sts), or
    the domain's BEIR folder (domain, with ``general`` the general set's folder; ``split``
    picks ``qrels/<split>.tsv``, ``general_split`` the general set's, default the same).
    ``metrics`` (domain only): retrieval metrics such as ``ndcg@10``; ``folds``
    (classification only): cross-validation folds, chosen from the data when None; ``seed``:
    k-means starts, fold assignment and the shuffled-label control.
    Bad lines are skipped and listed in the result's ``input``; unusable input raises
    :class:`~hybridsearch.errors.InvalidInputError`.
    """
    if task not in TASKS:
        raise InvalidInputError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    _check_options(task, general=general, metrics=metrics, folds=folds)
    path = Path(data)
    if task == "domain":
        from hybridsearch.eval.domain import DEFAULT_METRICS, evaluate_domain, load_beir_folder

        if general is None:
            raise InvalidInputError(
                "the domain check needs a general set to compare with: pass a BEIR folder "
                "as general (--general)"
            )
        general_set = load_beir_folder(Path(general), general_split or split)
        domain_set = load_beir_folder(path, split)
        return evaluate_domain(
            _embedder(model), general_set, domain_set, metrics=metrics or DEFAULT_METRICS
        )
    if task == "sts":
        from hybridsearch.eval.models import evaluate_sts, load_sts_pairs

        return StsResult(evaluate_sts(_embedder(model), load_sts_pairs(path)))
    from hybridsearch.eval.labelled import load_labelled
    from hybridsearch.loaders import SkipLog

    texts = load_labelled(path, SkipLog())
    if task == "clustering":
        from hybridsearch.eval.clustering import evaluate_clustering

        texts.require_labels(task)  # before loading a model for nothing
        return evaluate_clustering(_embedder(model), texts, seed=seed)
    from hybridsearch.eval.classification import choose_folds, evaluate_classification

    texts.require_labels(task)
    choose_folds(dict(texts.counts()), folds)
    return evaluate_classification(_embedder(model), texts, folds=folds, seed=seed)


def _check_options(task: str, *, general: object, metrics: object, folds: object) -> None:
    """An option another task uses is an error here, not silently ignored."""
    for name, value, owner in (
        ("general", general, "domain"),
        ("metrics", metrics, "domain"),
        ("folds", folds, "classification"),
    ):
        if value is not None and task != owner:
            raise InvalidInputError(f"{name} is an option of the {owner} task, not of {task}")
