"""Fine-tune a cross-encoder reranker: on labelled pairs, or listwise on ranking groups.

Two losses share one plain torch loop over the ``CrossEncoder``'s own ``preprocess`` and
forward pass, so the tokenization at training time is exactly the one
:class:`~hybridsearch.models.reranker.Reranker` uses at inference, and there is no
trainer/accelerate/datasets machinery to configure:

* :func:`fine_tune_cross_encoder`: pointwise binary cross-entropy on (query, passage, 0/1)
  pairs, the quick recipe of the test fixture;
* :func:`fine_tune_listwise`: softmax cross-entropy over one positive and n negatives per
  query (the loss rerankers are trained with: it teaches the order within a query's
  candidates, which is what reranking uses), with optional validation every few steps,
  early stopping and the best checkpoint kept.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hybridsearch.errors import InvalidInputError, ModelError
from hybridsearch.models.resolve import load_failure_message, resolve_model_path

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

logger = logging.getLogger(__name__)

LabelledPair = tuple[str, str, float]
#: (query, positive passage, negative passages): one listwise training example.
RankingGroup = tuple[str, str, Sequence[str]]
#: Scores the model being trained (in eval mode) on held-out data; higher is better.
Validate = Callable[["CrossEncoder"], float]


def _check_pairs(pairs: Sequence[LabelledPair]) -> list[LabelledPair]:
    checked: list[LabelledPair] = []
    for i, item in enumerate(pairs):
        if not isinstance(item, tuple | list) or len(item) != 3:
            raise InvalidInputError(f"pair {i} must be (query, passage, label), got {item!r}")
        query, passage, label = item
        if not isinstance(query, str) or not isinstance(passage, str):
            raise InvalidInputError(f"pair {i}: query and passage must be strings")
        if isinstance(label, bool) or label not in (0, 1):
            raise InvalidInputError(f"pair {i}: label must be 0 or 1, got {label!r}")
        checked.append((query, passage, float(label)))
    if not checked:
        raise InvalidInputError("no training pairs given")
    labels = {label for _, _, label in checked}
    if labels != {0.0, 1.0}:
        raise InvalidInputError("training pairs need both positive (1) and negative (0) labels")
    return checked


def _batches(n: int, batch_size: int, rng: random.Random) -> Iterator[list[int]]:
    """Endless mini-batches of indices; reshuffled every epoch, the last short batch dropped
    unless it is the only one."""
    while True:
        order = list(range(n))
        rng.shuffle(order)
        stop = n - n % batch_size if n >= batch_size else n
        for start in range(0, stop, batch_size):
            yield order[start : start + batch_size]


def _load_base(base_model: str, max_length: int, device: str) -> CrossEncoder:
    from sentence_transformers import CrossEncoder

    resolved = resolve_model_path(base_model)
    try:
        model: CrossEncoder = CrossEncoder(
            resolved,
            num_labels=1,
            max_length=max_length,
            device=device,
            local_files_only=Path(resolved).expanduser().is_dir(),
        )
    except Exception as exc:
        message = load_failure_message("base model", base_model, resolved, exc)
        raise ModelError(message) from exc
    return model


def _head_module(model: CrossEncoder) -> torch.nn.Module | None:
    """The classification head (``classifier`` or ``score``), if found."""
    hf_model = model.model
    for name in ("classifier", "score"):
        module = getattr(hf_model, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    return None


def _head_parameters(model: CrossEncoder) -> list[torch.nn.Parameter]:
    """Parameters of the classification head, if found."""
    head = _head_module(model)
    return [] if head is None else list(head.parameters())


def head_output_layer(model: CrossEncoder) -> torch.nn.Linear | None:
    """The head's last linear layer (the one that outputs the logit), if found."""
    head = _head_module(model)
    layers = [] if head is None else [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    return layers[-1] if layers else None


def _has_trained_head(model: CrossEncoder) -> bool:
    """Whether the checkpoint was already a sequence classifier (else the head is new)."""
    config = getattr(model.model, "config", None)
    architectures = getattr(config, "architectures", None) or []
    return any(str(name).endswith("ForSequenceClassification") for name in architectures)


def _check_groups(groups: Sequence[RankingGroup]) -> list[RankingGroup]:
    checked: list[RankingGroup] = []
    sizes: set[int] = set()
    for i, item in enumerate(groups):
        if not isinstance(item, tuple | list) or len(item) != 3:
            raise InvalidInputError(f"group {i} must be (query, positive, negatives), got {item!r}")
        query, positive, negatives = item
        texts = [query, positive, *negatives] if isinstance(negatives, list | tuple) else None
        if texts is None or not all(isinstance(t, str) for t in texts):
            raise InvalidInputError(
                f"group {i}: query and positive must be strings, negatives a list of strings"
            )
        sizes.add(len(negatives))
        checked.append((query, positive, tuple(negatives)))
    if not checked:
        raise InvalidInputError("no training groups given")
    if len(sizes) != 1 or 0 in sizes:
        raise InvalidInputError(
            "every training group needs the same number of negatives, at least one; got "
            f"{sorted(sizes)}"
        )
    return checked


@dataclass
class TrainingLog:
    """What a training run did: steps run, and each validation (step, score) in order.

    ``best_step`` is the step whose weights were saved (the last step without validation).
    """

    steps: int = 0
    best_step: int = 0
    best_score: float | None = None
    validations: list[tuple[int, float]] = field(default_factory=list)
    stopped_early: bool = False


def _optimizer(
    model: CrossEncoder, learning_rate: float, head_learning_rate: float | None
) -> torch.optim.Optimizer:
    """AdamW with the head on its own rate: by default the encoder's, or 10x that when the
    head is new (a freshly initialised head barely moves in a few hundred steps at an
    encoder's rate)."""
    head_lr = head_learning_rate
    if head_lr is None:
        head_lr = learning_rate if _has_trained_head(model) else 10 * learning_rate
    head = _head_parameters(model)
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    groups: list[dict[str, Any]] = [{"params": body, "lr": learning_rate}]
    if head:
        groups.append({"params": head, "lr": head_lr})
    return torch.optim.AdamW(groups, weight_decay=0.01)


def _logits(model: CrossEncoder, pairs: list[tuple[str, str]]) -> torch.Tensor:
    features = model.preprocess(pairs)
    features = {
        k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()
    }
    logits: torch.Tensor = model(features)["scores"].view(-1)
    return logits


def _train(
    model: CrossEncoder,
    count: int,
    batch_loss: Callable[[list[int]], torch.Tensor],
    *,
    max_steps: int,
    batch_size: int,
    learning_rate: float,
    head_learning_rate: float | None,
    seed: int,
    on_step: Callable[[int, float], None] | None,
    validate: Validate | None = None,
    validate_every: int = 0,
    patience: int = 0,
) -> TrainingLog:
    """The one training loop: ``max_steps`` mini-batches of shuffled example indices, AdamW,
    10% linear warm-up then linear decay, gradient clipping at 1.0.

    With ``validate``, the model is scored every ``validate_every`` steps and at the end;
    the best-scoring weights are restored at the end, and training stops once ``patience``
    validations in a row (0: never) have not beaten the best.
    """
    rates = [learning_rate] if head_learning_rate is None else [learning_rate, head_learning_rate]
    if max_steps < 1 or batch_size < 1 or not all(r > 0 for r in rates):
        raise InvalidInputError("max_steps and batch_size must be positive, learning rates above 0")
    random.seed(seed)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    optimizer = _optimizer(model, learning_rate, head_learning_rate)
    warmup = max(1, math.ceil(0.1 * max_steps))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (max_steps - step) / max(1, max_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    batches = _batches(count, batch_size, rng)
    log = TrainingLog()
    best_state: dict[str, torch.Tensor] | None = None
    running, seen, stale = 0.0, 0, 0

    def check(step: int) -> bool:
        """Validate after ``step`` steps; False when it is time to stop."""
        nonlocal best_state, stale
        assert validate is not None
        model.eval()
        with torch.no_grad():
            score = float(validate(model))
        model.train()
        log.validations.append((step, score))
        logger.info("step %d: validation %.4f", step, score)
        if log.best_score is None or score > log.best_score:
            log.best_score, log.best_step, stale = score, step, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return True
        stale += 1
        return not (patience and stale >= patience)

    model.train()
    for step in range(max_steps):
        loss = batch_loss(next(batches))
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        log.steps = step + 1
        running, seen = running + float(loss.detach()), seen + 1
        if on_step is not None:
            on_step(step + 1, float(loss.detach()))
        if seen == 25 or step + 1 == max_steps:
            logger.info("step %d/%d: mean loss %.4f", step + 1, max_steps, running / seen)
            running, seen = 0.0, 0
        due = validate_every > 0 and (step + 1) % validate_every == 0
        if validate is not None and (due or step + 1 == max_steps) and not check(step + 1):
            log.stopped_early = step + 1 < max_steps
            break
    if best_state is None:
        log.best_step = log.steps
    else:
        model.load_state_dict(best_state)
    model.eval()
    return log


def fine_tune_cross_encoder(
    base_model: str,
    pairs: Sequence[LabelledPair],
    output_dir: str | Path,
    *,
    max_steps: int = 200,
    batch_size: int = 16,
    learning_rate: float = 3e-5,
    max_length: int = 256,
    seed: int = 0,
    device: str = "cpu",
    head_learning_rate: float | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    """Train a one-logit cross-encoder with binary cross-entropy and save it to ``output_dir``.

    ``base_model`` is a cross-encoder or a plain encoder (e.g. the packaged all-MiniLM-L6-v2,
    which gets a freshly initialised classification head). Training runs ``max_steps``
    mini-batches of shuffled pairs (see :func:`_train`). The same seed and inputs give the
    same model on CPU. The result loads with ``Reranker(str(path))``, and scores are sigmoid
    probabilities of relevance.

    ``head_learning_rate`` applies to the classification head only (see :func:`_optimizer`).
    ``on_step(steps_done, loss)`` is called after every step (for a progress bar).
    """
    checked = _check_pairs(pairs)
    if max_length < 8:
        raise InvalidInputError("max_length must be at least 8 tokens")
    torch.manual_seed(seed)  # the fresh head's initialisation
    model = _load_base(base_model, max_length, device)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def batch_loss(indices: list[int]) -> torch.Tensor:
        batch = [checked[i] for i in indices]
        logits = _logits(model, [(q, p) for q, p, _ in batch])
        labels = torch.tensor([label for _, _, label in batch], device=model.device)
        loss: torch.Tensor = loss_fn(logits, labels)
        return loss

    _train(
        model,
        len(checked),
        batch_loss,
        max_steps=max_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        head_learning_rate=head_learning_rate,
        seed=seed,
        on_step=on_step,
    )
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    return out


def fine_tune_listwise(
    base_model: str,
    groups: Sequence[RankingGroup],
    *,
    max_steps: int,
    batch_size: int,
    learning_rate: float,
    max_length: int,
    head_learning_rate: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    on_step: Callable[[int, float], None] | None = None,
    validate: Validate | None = None,
    validate_every: int = 0,
    patience: int = 0,
) -> tuple[CrossEncoder, TrainingLog]:
    """Train a one-logit cross-encoder listwise and return it (not saved) with its log.

    Each group's positive and negatives are scored together; the loss is the softmax
    cross-entropy of the positive among them (``batch_size`` groups a step). Only the order
    of a query's passages is learnt, so the logits carry no absolute meaning until
    calibrated (:mod:`hybridsearch.train.calibration`). Validation, early stopping and the
    best checkpoint as in :func:`_train`.
    """
    checked = _check_groups(groups)
    if max_length < 8:
        raise InvalidInputError("max_length must be at least 8 tokens")
    torch.manual_seed(seed)
    model = _load_base(base_model, max_length, device)
    width = 1 + len(checked[0][2])
    target_cache: dict[int, torch.Tensor] = {}

    def batch_loss(indices: list[int]) -> torch.Tensor:
        pairs = [(q, p) for i in indices for q, p in _group_pairs(checked[i])]
        logits = _logits(model, pairs).view(len(indices), width)
        if len(indices) not in target_cache:
            target_cache[len(indices)] = torch.zeros(
                len(indices), dtype=torch.long, device=model.device
            )
        loss: torch.Tensor = torch.nn.functional.cross_entropy(logits, target_cache[len(indices)])
        return loss

    log = _train(
        model,
        len(checked),
        batch_loss,
        max_steps=max_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        head_learning_rate=head_learning_rate,
        seed=seed,
        on_step=on_step,
        validate=validate,
        validate_every=validate_every,
        patience=patience,
    )
    return model, log


def _group_pairs(group: RankingGroup) -> list[tuple[str, str]]:
    """The positive first (the softmax target is index 0), then the negatives."""
    query, positive, negatives = group
    return [(query, positive), *((query, n) for n in negatives)]
