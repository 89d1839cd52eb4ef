"""Cross-encoder reranking of (query, passage) pairs.

Loaded ``CrossEncoder`` objects are shared per (resolved path, device) across the process.
:func:`rerank_safely` is the entry point for the search layer: it never raises a model
error, so a broken or missing reranker degrades search to fused order with a note instead of
failing the request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from hybridsearch.errors import InvalidInputError, ModelError
from hybridsearch.models.backend import DEFAULT_BACKEND, BackendName, InferenceBackend
from hybridsearch.models.base import ModelRunner, load_sentence_transformers_model
from hybridsearch.models.batching import run_in_token_order
from hybridsearch.models.light_runtime import LightCrossEncoder, load_light_cross_encoder
from hybridsearch.models.resolve import SharedModels

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

ENV_VAR = "HYBRIDSEARCH_RERANKER_MODEL"
#: Tokens of a (query, passage) pair the cross-encoder reads by default (a model's own
#: limit, if lower, still applies). The default chunks (200 estimated tokens) make SciFact
#: pairs of 179 tokens at the median and 247 at p99: 256 cuts 0.6 % of pairs, each by a few
#: tokens, while a user's longer chunks no longer cost up to 512 tokens a pair
#: (bench/rerank_length.py; bench/NOTES.md, "Models on CPU").
DEFAULT_MAX_LENGTH = 256
#: Pairs per forward pass. With pairs sorted by tokens, small batches pad least: 50 SciFact
#: pairs at up to 256 tokens took 709 ms in batches of 8 against 849 ms in batches of 32
#: (int8, 2 threads; bench/rerank_length.py).
DEFAULT_BATCH_SIZE = 8
#: Written next to a model's weights by ``hybridsearch train reranker``: the weight of the
#: fused score in the rerank score and the fusion method it was fitted for
#: (:mod:`hybridsearch.train.calibration`).
RERANK_FILE = "hybridsearch-rerank.json"


def _load(
    resolved: str, device: str, local_files_only: bool, backend: InferenceBackend
) -> CrossEncoder | LightCrossEncoder:
    """The model on its cached export without torch when possible, else sentence-transformers."""
    if device == "cpu":
        light = load_light_cross_encoder(resolved, backend)
        if light is not None:
            return light
    from sentence_transformers import CrossEncoder

    model: CrossEncoder = load_sentence_transformers_model(
        CrossEncoder, resolved, device, local_files_only, backend
    )
    return model


#: One loaded cross-encoder per (resolved name or path, device, backend), shared by every
#: Reranker.
_models: SharedModels[CrossEncoder | LightCrossEncoder] = SharedModels(_load)
clear_model_cache = _models.clear


class Reranker(ModelRunner["CrossEncoder | LightCrossEncoder"]):
    """Scores passages against a query with a sentence-transformers ``CrossEncoder``.

    The model loads on first use. A failed load is remembered: later calls raise the same
    :class:`ModelError` at once instead of retrying a slow, doomed load on every search.
    Build a new ``Reranker`` to try again.

    ``backend`` is ``"auto"`` (default), ``"torch"``, or on CPU ``"onnx"`` or
    ``"onnx-int8"``, as for :class:`~hybridsearch.models.embedder.Embedder` (same export
    cache and thread rule).
    """

    def __init__(
        self,
        model: str,
        *,
        device: str = "cpu",
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_length: int | None = DEFAULT_MAX_LENGTH,
        torch_threads: int | None = None,
        backend: BackendName | str = DEFAULT_BACKEND,
        onnx_cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(
            model,
            device=device,
            batch_size=batch_size,
            max_length=max_length,
            torch_threads=torch_threads,
            backend=backend,
            onnx_cache_dir=onnx_cache_dir,
        )
        self._fused_weights: dict[str, float] | None = None

    kind = "reranker model"
    env_var = ENV_VAR
    remember_load_error = True

    def shared(self) -> SharedModels[CrossEncoder | LightCrossEncoder]:
        return _models

    def fused_weight(self, fusion: str) -> float:
        """The fused score's weight in this model's rerank score for a search fused with
        ``fusion``: as fitted by ``train reranker`` (:data:`RERANK_FILE`) for the method it
        was fitted for, else 0 (the cross-encoder's score alone)."""
        if self._fused_weights is None:
            file = Path(self.model_id).expanduser() / RERANK_FILE
            try:
                stored = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
                self._fused_weights = {str(stored["fusion"]): float(stored["fused_weight"])}
            except (OSError, ValueError, KeyError, TypeError):
                self._fused_weights = {}
        return self._fused_weights.get(fusion, 0.0)

    def score(self, query: str, passages: Sequence[str]) -> npt.NDArray[np.float32]:
        """One relevance score per passage (higher is more relevant), as float32 of shape (n,)."""
        if not isinstance(query, str):
            raise InvalidInputError(f"query must be a string, got {type(query).__name__}")
        if isinstance(passages, str):
            raise InvalidInputError("passages must be a sequence of strings, not one string")
        items = list(passages)
        for i, passage in enumerate(items):
            if not isinstance(passage, str):
                raise InvalidInputError(f"passage {i} is {type(passage).__name__}, expected str")
        model = self.load()
        if not items:
            return np.empty(0, dtype=np.float32)
        pairs = [(query, passage) for passage in items]
        max_length = self._effective_max_length(model)

        predict, count = self._runner(model, max_length)
        try:
            with self._cores():
                scores = run_in_token_order(pairs, self._batch_size, predict, count).reshape(-1)
        except Exception as exc:
            raise ModelError(f"reranker {self._model_id!r} failed: {exc}") from exc
        if scores.shape != (len(items),):
            raise ModelError(
                f"reranker {self._model_id!r} returned {scores.size} scores for "
                f"{len(items)} passages; it must have a single output label"
            )
        if not np.isfinite(scores).all():
            raise ModelError(f"reranker {self._model_id!r} returned NaN or infinite scores")
        return scores

    def _runner(
        self, model: CrossEncoder | LightCrossEncoder, max_length: int | None
    ) -> tuple[
        Callable[[list[tuple[str, str]]], npt.NDArray[np.float32]],
        Callable[[list[tuple[str, str]]], list[int]],
    ]:
        """How to score a batch of pairs and count each pair's tokens, for either runtime."""
        if isinstance(model, LightCrossEncoder):
            light = model

            def predict_light(batch: list[tuple[str, str]]) -> npt.NDArray[np.float32]:
                return light.predict(batch, max_length)

            def count_light(batch: list[tuple[str, str]]) -> list[int]:
                return light.count_tokens(batch, max_length)

            return predict_light, count_light
        cross_encoder = model

        def predict(batch: list[tuple[str, str]]) -> npt.NDArray[np.float32]:
            raw = cross_encoder.predict(
                batch,
                batch_size=len(batch),
                show_progress_bar=False,
                convert_to_numpy=True,
                processing_kwargs={"text": {"max_length": max_length}} if max_length else None,
            )
            return np.asarray(raw, dtype=np.float32).reshape(len(batch), -1)

        def count(batch: list[tuple[str, str]]) -> list[int]:
            encoded = cross_encoder.tokenizer(
                [query for query, _ in batch],
                [passage for _, passage in batch],
                truncation=max_length is not None,
                max_length=max_length,
            )
            return [len(ids) for ids in encoded["input_ids"]]

        return predict, count

    def _effective_max_length(self, model: CrossEncoder | LightCrossEncoder) -> int | None:
        """``max_length``, capped at the model's own limit so positions never overflow."""
        own = getattr(model, "max_seq_length", None)
        if self._max_length is None:
            return None
        return min(self._max_length, own) if isinstance(own, int) and own > 0 else self._max_length


def combine_with_fused(
    scores: npt.NDArray[np.float32], fused: Sequence[float], weight: float
) -> npt.NDArray[np.float32]:
    """The rerank score: ``sigmoid(logit(score) + weight * fused)``, or ``scores`` unchanged
    when ``weight`` is 0. With a model from ``train reranker`` (its score
    ``sigmoid(calibrated logit)``) this is the calibrated probability of relevance given the
    cross-encoder and the fused score. The one place search and evaluation combine them."""
    if weight == 0.0:
        return scores
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1 - 1e-7)
    logit = np.log(p / (1 - p)) + weight * np.asarray(fused, dtype=np.float64)
    return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)


@dataclass(frozen=True)
class RerankOutcome:
    """Reranker scores, or ``scores=None`` and a note saying why results stay in fused order."""

    scores: npt.NDArray[np.float32] | None
    note: str | None


# Scoring runs here when a timeout is set; a call that runs over keeps its thread
# (torch cannot be interrupted) but the search goes on without it.
_scoring_threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hybridsearch-rerank")


def rerank_safely(
    reranker: Reranker | None,
    query: str,
    passages: Sequence[str],
    *,
    timeout_s: float | None = None,
) -> RerankOutcome:
    """Score ``passages`` if possible; never raises for a missing, broken or failing model.

    Scores of the wrong shape or with NaN/infinity count as a failure, and so does a
    model slower than ``timeout_s``. Invalid arguments (not strings) still raise
    :class:`InvalidInputError`: those are caller bugs, not reranker trouble.
    """
    if reranker is None:
        return RerankOutcome(
            None,
            "no reranker configured; results are in fused order "
            f"(set {ENV_VAR} or pass reranker=...)",
        )
    failed = f"reranker {reranker.model_id!r}"
    try:
        if timeout_s is None:
            raw = reranker.score(query, passages)
        else:
            raw = _scoring_threads.submit(reranker.score, query, passages).result(timeout_s)
        scores = np.asarray(raw, dtype=np.float32).reshape(-1)
    except InvalidInputError:
        raise
    except FutureTimeoutError:
        budget_ms = (timeout_s or 0) * 1000
        return RerankOutcome(
            None, f"{failed} timed out after {budget_ms:.0f} ms; results are in fused order"
        )
    except Exception as exc:
        return RerankOutcome(None, f"{failed} failed: {exc}; results are in fused order")
    if scores.shape != (len(passages),):
        return RerankOutcome(
            None,
            f"{failed} returned {scores.size} scores for {len(passages)} passages; "
            "results are in fused order",
        )
    if not np.all(np.isfinite(scores)):
        return RerankOutcome(
            None, f"{failed} returned NaN or infinite scores; results are in fused order"
        )
    return RerankOutcome(scores, None)
