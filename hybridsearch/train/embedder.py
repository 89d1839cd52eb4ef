"""``hybridsearch train embedder``: a bi-encoder fine-tuned on a collection's own candidates
and the user's judgments, selected on held-out queries.

The same split and mined examples as ``train reranker`` (:mod:`hybridsearch.train.reranker`,
:mod:`hybridsearch.train.mining`): the judged queries split by query id with a fixed seed,
every query's fused TopK mined through search, one example per (query, retrieved relevant
document) with hard negatives from the unjudged head of its list. The model trains with
in-batch and hard negatives (:func:`~hybridsearch.models.embedder_training.fine_tune_embedder`).

Validation ranks a fixed pool by the model's cosine similarity: the chunks of every
validation query's fused candidates together, so each query's own candidates compete with
the others' (thousands of chunks for a hundred queries). It is measured with the
evaluation's own ranking rule and metrics, for the base model first, then every
``validate_every`` steps; the best weights are kept. The pool holds only what the current
model and BM25 found, so it measures how well a model orders candidates, not what it
would newly find: the fused figure with the new model comes from re-embedding the
collection (``hybridsearch collections reembed``) and ``hybridsearch eval``.
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
from hybridsearch.eval.runs import document_ranking, to_run
from hybridsearch.loaders import SkipLog
from hybridsearch.models.embedder_training import EmbedderTrainingLog, fine_tune_embedder
from hybridsearch.train.mining import CandidateLists, mine_examples
from hybridsearch.train.recipes import RECORD_FILE, SELECTION_METRIC, EmbedderRecipe, Progress

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


@dataclass(frozen=True)
class EmbedderTraining:
    """The outcome of :func:`train_embedder`; also written to ``RECORD_FILE``."""

    path: Path
    recipe: EmbedderRecipe
    base_model: str
    train_queries: int
    validation_queries: int
    examples: int
    pool: int
    log: EmbedderTrainingLog
    #: nDCG@10 on the validation pool: the base model's and the kept model's
    validation: dict[str, float]
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path), "log": asdict(self.log)}


class PoolRanking:
    """nDCG@10 of the validation queries, each ranking the whole candidate pool by cosine."""

    def __init__(
        self,
        queries: Mapping[str, str],
        qrels: Qrels,
        lists: CandidateLists,
        query_prompt: str | None,
        document_prompt: str | None,
    ) -> None:
        texts: dict[str, str] = {}  # chunk text -> its document id
        for qid in queries:
            for candidate in lists.get(qid, []):
                texts.setdefault(candidate.text, candidate.document_id)
        self.size = len(texts)
        self._texts = [(document_prompt or "") + text for text in texts]
        self._documents = list(texts.values())
        self._ids = list(queries)
        self._queries = [(query_prompt or "") + queries[q] for q in self._ids]
        self._evaluator = Evaluator({q: dict(qrels[q]) for q in self._ids}, [SELECTION_METRIC])

    def __call__(self, model: SentenceTransformer) -> float:
        def encode(texts: list[str]) -> np.ndarray:
            return np.asarray(
                model.encode(
                    texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False
                )
            )

        similarity = encode(self._queries) @ encode(self._texts).T
        rankings = {
            qid: document_ranking(self._documents[i] for i in np.argsort(-row, kind="stable"))
            for qid, row in zip(self._ids, similarity, strict=True)
        }
        return self._evaluator.mean(to_run(rankings))[SELECTION_METRIC]


def train_embedder(
    hs: HybridSearch,
    collection: str,
    queries: Mapping[str, str],
    qrels: Qrels,
    out: str | Path,
    recipe: EmbedderRecipe | None = None,
    *,
    on_progress: Progress | None = None,
    on_step: Callable[[int, float], None] | None = None,
    skips: SkipLog | None = None,
) -> EmbedderTraining:
    """Train, select and save an embedding model for ``collection``.

    ``qrels`` must be a train split: its queries are split into train and validation here,
    and no other judgments are read. ``on_step(steps_done, loss)`` for a progress bar.
    """
    recipe = recipe or EmbedderRecipe()
    recipe.check()
    target = Path(out)
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
    timings = {"mine": mined.mine_s}
    stored = hs.get_collection(collection)
    base = recipe.base_model or stored.embedding_model
    train, held_out, examples = mined.train, mined.held_out, mined.groups
    settings = stored.settings
    validation = PoolRanking(
        held_out, mined.qrels, mined.lists, settings.query_prompt, settings.document_prompt
    )

    started = time.perf_counter()
    training_log = fine_tune_embedder(
        base,
        examples,
        target,
        max_steps=recipe.steps,
        batch_size=recipe.batch_size,
        negatives=recipe.negatives,
        learning_rate=recipe.learning_rate,
        max_length=recipe.max_length,
        seed=recipe.seed,
        device=hs.settings.device,
        validate=validation,
        validate_every=recipe.validate_every,
        patience=recipe.patience,
        query_prompt=settings.query_prompt,
        document_prompt=settings.document_prompt,
        on_step=on_step,
    )
    timings["train"] = time.perf_counter() - started
    scores = dict(training_log.validations)
    result = EmbedderTraining(
        path=target,
        recipe=recipe,
        base_model=base,
        train_queries=len(train),
        validation_queries=len(held_out),
        examples=len(examples),
        pool=validation.size,
        log=training_log,
        validation={"base": scores[0], "trained": scores[training_log.best_step]},
        timings_s={k: round(v, 1) for k, v in timings.items()},
    )
    record = {**result.to_dict(), "validation_query_ids": sorted(held_out)}
    (target / RECORD_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return result
