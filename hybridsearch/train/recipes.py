"""How models are trained: the recipes of ``hybridsearch train reranker`` and ``train
embedder``, and what their runs share.

Kept apart from the training code, which imports torch: the command line builds its flags
from these defaults at start-up, and a one-shot search must not pay for torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hybridsearch.config import DEFAULT_EMBEDDING_MODEL
from hybridsearch.errors import InvalidInputError
from hybridsearch.params import TOP_K

#: Written next to the weights: the recipe, the split, the log and the validation figures.
RECORD_FILE = "hybridsearch-training.json"
#: The metric that selects checkpoints and heads the closing tables.
SELECTION_METRIC = "ndcg@10"

#: ``(stage, done, total)``: stage is "mine", "train" or "evaluate".
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RerankerRecipe:
    """How a reranker is trained; the defaults are the measured SciFact recipe."""

    base_model: str = DEFAULT_EMBEDDING_MODEL
    steps: int = 200
    batch_size: int = 4
    negatives: int = 7
    negative_depth: int = 30
    max_length: int = 128
    learning_rate: float = 1e-4
    head_learning_rate: float | None = None
    validation_queries: int = 100
    validate_every: int = 100
    patience: int = 2
    rerank_depth: int = 20
    top_k: int = TOP_K.default
    seed: int = 0

    def check(self) -> None:
        """InvalidInputError naming the first setting out of range."""
        positive = {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "negatives": self.negatives,
            "validation_queries": self.validation_queries,
            "rerank_depth": self.rerank_depth,
        }
        for name, value in positive.items():
            if value < 1:
                raise InvalidInputError(f"{name} must be at least 1, got {value}")
        if self.max_length < 16:
            raise InvalidInputError(f"max_length must be at least 16 tokens, got {self.max_length}")
        if self.validate_every < 0 or self.patience < 0:
            raise InvalidInputError("validate_every and patience cannot be negative")
        TOP_K.check(self.top_k)
        if not self.negatives < self.negative_depth <= self.top_k:
            raise InvalidInputError(
                f"need negatives ({self.negatives}) < negative_depth ({self.negative_depth})"
                f" <= top_k ({self.top_k}): negatives are drawn from the fused list's head"
            )
        if not 10 <= self.rerank_depth <= self.top_k:
            raise InvalidInputError(
                f"rerank_depth must be between 10 (nDCG@10 is measured) and top_k "
                f"({self.top_k}), got {self.rerank_depth}"
            )


@dataclass(frozen=True)
class EmbedderRecipe:
    """How an embedder is trained. ``base_model`` None: the collection's own model."""

    base_model: str | None = None
    steps: int = 300
    batch_size: int = 16
    negatives: int = 1
    negative_depth: int = 30
    max_length: int = 256
    learning_rate: float = 2e-5
    validation_queries: int = 100
    validate_every: int = 100
    patience: int = 2
    top_k: int = TOP_K.default
    seed: int = 0

    def check(self) -> None:
        """InvalidInputError naming the first setting out of range."""
        for name in ("steps", "validation_queries"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise InvalidInputError(
                f"batch_size must be at least 2 (the batch's other passages are negatives),"
                f" got {self.batch_size}"
            )
        if self.max_length < 16:
            raise InvalidInputError(f"max_length must be at least 16 tokens, got {self.max_length}")
        if self.validate_every < 1 or self.patience < 0:
            raise InvalidInputError("validate_every must be at least 1 and patience not negative")
        TOP_K.check(self.top_k)
        if not 0 <= self.negatives < self.negative_depth <= self.top_k:
            raise InvalidInputError(
                f"need 0 <= negatives ({self.negatives}) < negative_depth"
                f" ({self.negative_depth}) <= top_k ({self.top_k}): negatives are drawn from"
                " the fused list's head"
            )
