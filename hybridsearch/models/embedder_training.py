"""Fine-tune a sentence-transformers bi-encoder with in-batch and mined hard negatives.

A plain torch loop over sentence-transformers' own ``tokenize`` and
``MultipleNegativesRankingLoss`` (no trainer, accelerate or datasets): each batch scores
every query against every positive of the batch and against its own hard negatives, so a
query learns to prefer its passage to the batch's other passages (in-batch negatives) and
to the near misses retrieval confused it with (hard negatives, mined by the caller from
the collection's fused candidates). ``validate`` scores the model every
``validate_every`` steps; the best weights are kept and training stops after
``patience`` validations without improvement (0: never stops early).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from hybridsearch.errors import InvalidInputError, ModelError
from hybridsearch.models.resolve import load_failure_message, resolve_model_path

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

#: (query, positive passage, hard negative passages): one training example.
Triplet = tuple[str, str, Sequence[str]]
#: Scores the model being trained (in eval mode) on held-out data; higher is better.
ValidateEmbedder = Callable[["SentenceTransformer"], float]


@dataclass
class EmbedderTrainingLog:
    """Steps run, each validation as (step, score), and the step whose weights were kept
    (0: the base model's, when no step beat it)."""

    steps: int = 0
    validations: list[tuple[int, float]] = field(default_factory=list)
    best_step: int = 0


def _check(examples: Sequence[Triplet], negatives: int) -> list[Triplet]:
    checked: list[Triplet] = []
    for i, item in enumerate(examples):
        if not isinstance(item, tuple | list) or len(item) != 3:
            raise InvalidInputError(f"example {i} must be (query, positive, negatives)")
        query, positive, hard = item
        if not (isinstance(query, str) and isinstance(positive, str)):
            raise InvalidInputError(f"example {i}: query and positive must be strings")
        if len(hard) < negatives or not all(isinstance(t, str) for t in hard):
            raise InvalidInputError(f"example {i} needs {negatives} negative strings")
        checked.append((query, positive, list(hard)))
    if not checked:
        raise InvalidInputError("no training examples")
    return checked


def load_base(base_model: str, max_length: int, device: str) -> SentenceTransformer:
    """The model to fine-tune, in torch (never an ONNX stand-in: it must train)."""
    from sentence_transformers import SentenceTransformer

    resolved = resolve_model_path(base_model)
    try:
        model = SentenceTransformer(resolved, device=device)
    except Exception as exc:
        raise ModelError(
            load_failure_message("embedding model", base_model, resolved, exc, None)
        ) from exc
    model.max_seq_length = max_length
    return model


def fine_tune_embedder(
    base_model: str,
    examples: Sequence[Triplet],
    output_dir: str | Path,
    *,
    max_steps: int = 200,
    batch_size: int = 16,
    negatives: int = 1,
    learning_rate: float = 2e-5,
    max_length: int = 256,
    seed: int = 0,
    device: str = "cpu",
    validate: ValidateEmbedder | None = None,
    validate_every: int = 50,
    patience: int = 2,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> EmbedderTrainingLog:
    """Train ``base_model`` on ``examples`` and save the kept weights to ``output_dir``
    (a sentence-transformers folder that :class:`~hybridsearch.models.embedder.Embedder`
    and ``reembed_collection`` load). ``on_step(step, loss)`` follows the progress."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    if max_steps < 1 or batch_size < 2 or negatives < 0:
        raise InvalidInputError("max_steps >= 1, batch_size >= 2 and negatives >= 0 are needed")
    data = _check(examples, negatives)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = load_base(base_model, max_length, device)
    loss_fn = MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    log = EmbedderTrainingLog()
    best = validate(model.eval()) if validate is not None else float("-inf")
    if validate is not None:
        log.validations.append((0, best))
    best_state = copy.deepcopy(model.state_dict()) if validate is not None else None
    stale, order = 0, list[int]()
    q_prefix, d_prefix = query_prompt or "", document_prompt or ""
    while log.steps < max_steps and not (patience and stale >= patience):
        if not order:
            order = rng.sample(range(len(data)), len(data))
        batch = [data[order.pop()] for _ in range(min(batch_size, len(order)))]
        columns = [[q_prefix + q for q, _, _ in batch], [d_prefix + p for _, p, _ in batch]]
        for k in range(negatives):  # the caller orders each query's negatives
            columns.append([d_prefix + hard[k] for _, _, hard in batch])
        model.train()
        features = [
            {
                key: value.to(model.device) if isinstance(value, torch.Tensor) else value
                for key, value in model.preprocess(texts).items()
            }
            for texts in columns
        ]
        loss = loss_fn(features, torch.empty(0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.steps += 1
        if on_step is not None:
            on_step(log.steps, float(loss.detach()))
        if validate is not None and (log.steps % validate_every == 0 or log.steps == max_steps):
            score = validate(model.eval())
            log.validations.append((log.steps, score))
            if score > best:
                best, stale, log.best_step = score, 0, log.steps
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
    if best_state is not None:
        model.load_state_dict(best_state)
    elif validate is None:
        log.best_step = log.steps
    model.save(str(output_dir))
    return log
