"""Fine-tune a cross-encoder reranker on your own labelled (query, passage, label) pairs.

A plain torch loop over the ``CrossEncoder``'s own ``preprocess`` and forward pass: the
tokenization at training time is exactly the one :class:`~hybridsearch.models.reranker.Reranker`
uses at inference, and there is no trainer/accelerate/datasets machinery to configure.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hybridsearch.errors import InvalidInputError, ModelError
from hybridsearch.models.resolve import load_failure_message, resolve_model_path

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

logger = logging.getLogger(__name__)

LabelledPair = tuple[str, str, float]


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


def _head_parameters(model: CrossEncoder) -> list[torch.nn.Parameter]:
    """Parameters of the classification head (``classifier`` or ``score``), if found."""
    hf_model = model.model
    for name in ("classifier", "score"):
        module = getattr(hf_model, name, None)
        if isinstance(module, torch.nn.Module):
            return list(module.parameters())
    return []


def _has_trained_head(model: CrossEncoder) -> bool:
    """Whether the checkpoint was already a sequence classifier (else the head is new)."""
    config = getattr(model.model, "config", None)
    architectures = getattr(config, "architectures", None) or []
    return any(str(name).endswith("ForSequenceClassification") for name in architectures)


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
    mini-batches of shuffled pairs with AdamW, 10% linear warm-up then linear decay, and
    gradient clipping at 1.0. The same seed and inputs give the same model on CPU. The result
    loads with ``Reranker(str(path))``, and scores are sigmoid probabilities of relevance.

    ``head_learning_rate`` applies to the classification head only. It defaults to
    ``learning_rate``, or 10x that when ``base_model`` has no trained head yet: a freshly
    initialised head barely moves in a few hundred steps at an encoder's rate.

    ``on_step(steps_done, loss)`` is called after every step (for a progress bar).
    """
    checked = _check_pairs(pairs)
    rates = [learning_rate] if head_learning_rate is None else [learning_rate, head_learning_rate]
    if max_steps < 1 or batch_size < 1 or max_length < 8 or not all(r > 0 for r in rates):
        raise InvalidInputError(
            "max_steps and batch_size must be positive, max_length at least 8, "
            "learning rates above 0"
        )
    out = Path(output_dir)
    random.seed(seed)
    torch.manual_seed(seed)
    rng = random.Random(seed)

    model = _load_base(base_model, max_length, device)
    head_lr = head_learning_rate
    if head_lr is None:
        head_lr = learning_rate if _has_trained_head(model) else 10 * learning_rate
    head = _head_parameters(model)
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    groups: list[dict[str, Any]] = [{"params": body, "lr": learning_rate}]
    if head:
        groups.append({"params": head, "lr": head_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    warmup = max(1, math.ceil(0.1 * max_steps))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (max_steps - step) / max(1, max_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    batches = _batches(len(checked), batch_size, rng)
    running, count = 0.0, 0

    model.train()
    for step in range(max_steps):
        batch = [checked[i] for i in next(batches)]
        features = model.preprocess([(q, p) for q, p, _ in batch])
        features = {
            k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()
        }
        labels = torch.tensor([label for _, _, label in batch], device=model.device)
        logits = model(features)["scores"].view(-1)
        loss = loss_fn(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        running, count = running + float(loss.detach()), count + 1
        if on_step is not None:
            on_step(step + 1, float(loss.detach()))
        if count == 25 or step + 1 == max_steps:
            logger.info("step %d/%d: mean loss %.4f", step + 1, max_steps, running / count)
            running, count = 0.0, 0
    model.eval()

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    return out
