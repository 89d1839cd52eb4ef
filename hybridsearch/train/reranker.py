"""``hybridsearch train reranker``: a cross-encoder fine-tuned on a collection's own
candidates and the user's judgments, selected and calibrated on held-out queries.

1. The judged queries are split by query id with a fixed seed: ``validation_queries`` of
   them are held out for model selection, early stopping and calibration; the rest train.
2. Every query's fused TopK is mined through search (:mod:`hybridsearch.train.mining`).
3. The model trains listwise (:func:`~hybridsearch.models.training.fine_tune_listwise`);
   every ``validate_every`` steps it reranks the validation queries' first
   ``rerank_depth`` candidates and is scored by nDCG@10 (the evaluation's own ranking rule
   and metrics), and the best checkpoint is kept.
4. A logistic fit on the validation candidates (the cross-encoder's logit and the fused
   score) calibrates the scores (:mod:`hybridsearch.train.calibration`): search reports
   the estimated probability that a candidate's document is relevant.
5. The saved model is evaluated as users will run it: the validation queries through
   :func:`~hybridsearch.eval.pipeline.evaluate_pipeline`, fused list against reranked.

The recipe's defaults were chosen on SciFact train's validation queries (bench/NOTES.md,
"Training a reranker", and ``bench/reranker_recipe.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hybridsearch.client import HybridSearch
from hybridsearch.eval.beir import Qrels
from hybridsearch.eval.metrics import Evaluator
from hybridsearch.eval.pipeline import PipelineConfig, evaluate_pipeline
from hybridsearch.eval.runs import document_ranking, rerank_order, to_run
from hybridsearch.loaders import SkipLog
from hybridsearch.models.configured import configured_reranker
from hybridsearch.models.training import TrainingLog, fine_tune_listwise
from hybridsearch.train.calibration import (
    Calibration,
    fit_calibration,
    fold_into_head,
    write_rerank_settings,
)
from hybridsearch.train.mining import (
    Candidate,
    CandidateLists,
    mine_examples,
    relevant,
)
from hybridsearch.train.recipes import (
    RECORD_FILE,
    SELECTION_METRIC,
    Progress,
    RerankerRecipe,
)

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder


@dataclass(frozen=True)
class RerankerTraining:
    """The outcome of :func:`train_reranker`; also written to ``RECORD_FILE``."""

    path: Path
    recipe: RerankerRecipe
    train_queries: int
    validation_queries: int
    groups: int
    log: TrainingLog
    calibration: Calibration
    #: ``{"hybrid": {metric: value}, "rerank": {...}}`` on the validation queries
    validation: dict[str, dict[str, float]]
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "recipe": asdict(self.recipe),
            "train_queries": self.train_queries,
            "validation_queries": self.validation_queries,
            "groups": self.groups,
            "log": asdict(self.log),
            "calibration": asdict(self.calibration),
            "validation": self.validation,
            "timings_s": self.timings_s,
        }


class HeldOutRanking:
    """Reranks the validation queries' candidates with the model in training.

    Scores are the model's raw logits (the order is what is measured; calibration needs
    them raw), kept per validation so the best checkpoint's can be calibrated without
    scoring again.
    """

    def __init__(
        self, queries: Mapping[str, str], qrels: Qrels, lists: CandidateLists, depth: int
    ) -> None:
        self._queries = queries
        self._qrels = {q: dict(qrels[q]) for q in queries}
        self._heads = {q: lists.get(q, [])[:depth] for q in queries}
        self._evaluator = Evaluator(self._qrels, [SELECTION_METRIC])
        self.logits: list[np.ndarray] = []
        heads = [(q, c) for q in queries for c in self._heads[q]]
        self.labels = np.array([float(c.document_id in relevant(self._qrels, q)) for q, c in heads])
        self.fused = np.array([c.fused for _, c in heads])

    def __call__(self, model: CrossEncoder) -> float:
        import torch

        pairs = [(self._queries[q], c.text) for q in self._queries for c in self._heads[q]]
        raw = model.predict(
            pairs, batch_size=16, activation_fn=torch.nn.Identity(), show_progress_bar=False
        )
        logits = np.asarray(raw, dtype=np.float64).reshape(-1)
        self.logits.append(logits)
        return self.measure(logits)

    def heads(self) -> list[list[Candidate]]:
        """Each validation query's candidates as scored, in query order."""
        return [self._heads[q] for q in self._queries]

    def measure(self, logits: np.ndarray | None, depth: int | None = None) -> float:
        """nDCG@10 of the candidates reranked by ``logits`` (one per candidate, as
        :meth:`__call__` scores them) down to ``depth`` (default: all scored), the rest in
        fused order; ``logits=None`` measures the fused order itself."""
        rankings: dict[str, list[str]] = {}
        start = 0
        for qid in self._queries:
            head = self._heads[qid]
            ordered = head
            if logits is not None:
                scores = [float(s) for s in logits[start : start + len(head)]]
                ordered = rerank_order(head, scores[:depth], len(head))
            start += len(head)
            rankings[qid] = document_ranking(c.document_id for c in ordered)
        return self._evaluator.mean(to_run(rankings))[SELECTION_METRIC]


def train_reranker(
    hs: HybridSearch,
    collection: str,
    queries: Mapping[str, str],
    qrels: Qrels,
    out: str | Path,
    recipe: RerankerRecipe | None = None,
    *,
    on_progress: Progress | None = None,
    on_step: Callable[[int, float], None] | None = None,
    skips: SkipLog | None = None,
) -> RerankerTraining:
    """Train, select, calibrate, save and evaluate a reranker for ``collection``.

    ``qrels`` must be a train split: its queries are split into train and validation here,
    and no other judgments are read. ``on_step(steps_done, loss)`` for a progress bar.
    """
    recipe = recipe or RerankerRecipe()
    recipe.check()
    target = Path(out)
    timings: dict[str, float] = {}
    mined = mine_examples(
        hs,
        collection,
        queries,
        qrels,
        validation_queries=recipe.validation_queries,
        top_k=recipe.top_k,
        negatives=recipe.negatives,
        negative_depth=recipe.negative_depth,
        seed=recipe.seed,
        log=skips if skips is not None else SkipLog(),
        on_progress=on_progress,
    )
    timings["mine"] = mined.mine_s
    fusion = hs.get_collection(collection).fusion_defaults.fusion
    train, held_out, judged_qrels, groups = mined.train, mined.held_out, mined.qrels, mined.groups

    def report(stage: str) -> Callable[[int, int], None] | None:
        if on_progress is None:
            return None
        progress = on_progress
        return lambda done, total: progress(stage, done, total)

    validation = HeldOutRanking(held_out, judged_qrels, mined.lists, recipe.rerank_depth)

    started = time.perf_counter()
    model, training_log = fine_tune_listwise(
        recipe.base_model,
        groups,
        max_steps=recipe.steps,
        batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate,
        head_learning_rate=recipe.head_learning_rate,
        max_length=recipe.max_length,
        seed=recipe.seed,
        device=hs.settings.device,
        on_step=on_step,
        validate=validation,
        validate_every=recipe.validate_every,
        patience=recipe.patience,
    )
    timings["train"] = time.perf_counter() - started
    best = [s for s, _ in training_log.validations].index(training_log.best_step)
    calibration = fit_calibration(validation.logits[best], validation.labels, validation.fused)
    fold_into_head(model, calibration)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target))
    write_rerank_settings(target, calibration, fusion)

    started = time.perf_counter()
    evaluation = evaluate_pipeline(
        hs,
        collection,
        held_out,
        {q: judged_qrels[q] for q in held_out},
        stages=("hybrid", "rerank"),
        ks=(10,),
        config=PipelineConfig(top_k=recipe.top_k, top_n=10, rerank_depth=recipe.rerank_depth),
        reranker=configured_reranker(str(target), hs.settings),
        on_progress=report("evaluate"),
    )
    timings["evaluate"] = time.perf_counter() - started
    result = RerankerTraining(
        path=target,
        recipe=recipe,
        train_queries=len(train),
        validation_queries=len(held_out),
        groups=len(groups),
        log=training_log,
        calibration=calibration,
        validation=evaluation.stages,
        timings_s={k: round(v, 1) for k, v in timings.items()},
    )
    record = {**result.to_dict(), "validation_query_ids": sorted(held_out)}
    (target / RECORD_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return result
