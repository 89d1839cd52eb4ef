"""Dense text embeddings from a sentence-transformers model.

Loaded models are cached per (resolved path, device) for the whole process, so every
:class:`Embedder` (one per collection, say) for the same model shares one copy of the weights.
Per-embedder settings such as ``max_length`` are applied per call, never on the shared model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from hybridsearch.errors import EmbeddingError, InvalidInputError, ModelError
from hybridsearch.models.backend import DEFAULT_BACKEND, BackendName, InferenceBackend
from hybridsearch.models.base import ModelRunner, load_sentence_transformers_model
from hybridsearch.models.batching import run_in_token_order
from hybridsearch.models.light_runtime import LightEmbedder, load_light_embedder
from hybridsearch.models.resolve import SharedModels

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

ENV_VAR = "HYBRIDSEARCH_EMBEDDING_MODEL"
#: Texts per forward pass. Sorted by tokens, 301 SciFact chunks embedded in 3.36 s in
#: batches of 16 against 3.54 s in 32 and 3.51 s in 8 (int8, 2 threads).
DEFAULT_BATCH_SIZE = 16


def _load(
    resolved: str, device: str, local_files_only: bool, backend: InferenceBackend
) -> SentenceTransformer | LightEmbedder:
    """The model on its cached export without torch when possible, else sentence-transformers."""
    if device == "cpu":
        light = load_light_embedder(resolved, backend)
        if light is not None:
            return light
    from sentence_transformers import SentenceTransformer

    return load_sentence_transformers_model(
        SentenceTransformer, resolved, device, local_files_only, backend
    )


#: One loaded embedding model per (resolved name or path, device, backend), shared by every
#: Embedder.
_models: SharedModels[SentenceTransformer | LightEmbedder] = SharedModels(_load)
clear_model_cache = _models.clear


class Embedder(ModelRunner["SentenceTransformer | LightEmbedder"]):
    """Embeds documents and queries with a sentence-transformers model.

    ``query_prompt`` and ``document_prompt`` are prefixes some models were trained with
    (E5: ``"query: "`` / ``"passage: "``; BGE: a query instruction). The model loads on first
    use; call :meth:`load` to load it eagerly and surface a :class:`ModelError` early.

    ``backend`` picks the runtime: ``"auto"`` (default: int8 on CPU, torch when the export
    fails or on other devices), ``"torch"``, or on CPU ``"onnx"`` (ONNX Runtime, fp32) or
    ``"onnx-int8"`` (dynamically quantized). The ONNX file is exported from the loaded
    weights on first use and cached in ``onnx_cache_dir`` (default:
    ``$HYBRIDSEARCH_ONNX_CACHE_DIR`` or the user cache folder); ONNX Runtime uses
    ``torch_threads`` intra-op threads, every usable core when unset. Once an export of a
    model folder is cached, later processes run it without importing torch
    (:mod:`hybridsearch.models.light_runtime`).
    """

    def __init__(
        self,
        model: str,
        *,
        device: str = "cpu",
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_length: int | None = None,
        normalize: bool = True,
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
        self._query_prompt = query_prompt or None
        self._document_prompt = document_prompt or None
        self._normalize = normalize

    kind = "embedding model"
    env_var = ENV_VAR

    def shared(self) -> SharedModels[SentenceTransformer | LightEmbedder]:
        return _models

    @property
    def dimensions(self) -> int:
        """Length of each embedding vector (loads the model)."""
        dim = self.load().get_embedding_dimension()
        if dim is None:
            raise ModelError(f"embedding model {self._model_id!r} does not report a dimension")
        return int(dim)

    def embed_documents(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed ``texts`` with the document prompt; returns float32 of shape (n, dimensions)."""
        if isinstance(texts, str):
            raise InvalidInputError("embed_documents takes a sequence of strings, not one string")
        items = list(texts)
        for i, text in enumerate(items):
            if not isinstance(text, str):
                raise InvalidInputError(f"text {i} is {type(text).__name__}, expected str")
        if not items:
            return np.empty((0, self.dimensions), dtype=np.float32)
        return self._encode(items, self._document_prompt)

    def embed_queries(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed ``texts`` with the query prompt; returns float32 of shape (n, dimensions)."""
        items = list(texts)
        if not items:
            return np.empty((0, self.dimensions), dtype=np.float32)
        return self._encode(items, self._query_prompt)

    def embed_query(self, text: str) -> npt.NDArray[np.float32]:
        """Embed one query with the query prompt; returns float32 of shape (dimensions,)."""
        if not isinstance(text, str):
            raise InvalidInputError(f"query must be a string, got {type(text).__name__}")
        vector: npt.NDArray[np.float32] = self._encode([text], self._query_prompt)[0]
        return vector

    def _runner(
        self, model: SentenceTransformer | LightEmbedder, prompt: str | None
    ) -> tuple[
        Callable[[list[str]], npt.NDArray[np.float32]],
        Callable[[list[str]], list[int]],
        AbstractContextManager[object],
    ]:
        """How to encode a batch, count each text's tokens as the model will see them (the
        prompt adds the same to each) and the context inference runs in, for either runtime."""
        if isinstance(model, LightEmbedder):
            light = model

            def encode_light(batch: list[str]) -> npt.NDArray[np.float32]:
                return light.encode(batch, prompt, self._max_length, self._normalize)

            def count_light(texts: list[str]) -> list[int]:
                return light.count_tokens(texts, self._max_length)

            return encode_light, count_light, nullcontext()
        import torch

        st = model
        kwargs: dict[str, Any] = {}
        if self._max_length is not None:
            kwargs["processing_kwargs"] = {"text": {"max_length": self._max_length}}

        def encode(batch: list[str]) -> npt.NDArray[np.float32]:
            raw = st.encode(
                batch,
                prompt=prompt,
                batch_size=len(batch),
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=self._normalize,
                **kwargs,
            )
            return np.asarray(raw, dtype=np.float32)

        def count(texts: list[str]) -> list[int]:
            limit = self._max_length or st.max_seq_length
            encoded = st.tokenizer(texts, truncation=limit is not None, max_length=limit)
            return [len(ids) for ids in encoded["input_ids"]]

        return encode, count, torch.inference_mode()

    def _encode(self, texts: list[str], prompt: str | None) -> npt.NDArray[np.float32]:
        model = self.load()
        encode, count, context = self._runner(model, prompt)
        try:
            with self._cores(), context:
                raw = run_in_token_order(texts, self._batch_size, encode, count)
        except Exception as exc:
            raise ModelError(f"embedding model {self._model_id!r} failed: {exc}") from exc
        vectors = np.asarray(raw, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ModelError(
                f"embedding model {self._model_id!r} returned shape {vectors.shape} "
                f"for {len(texts)} texts"
            )
        bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
        if bad.size:
            raise EmbeddingError(
                f"embedding model {self._model_id!r} produced NaN or infinity for "
                f"{bad.size} of {len(texts)} texts (first at index {int(bad[0])})"
            )
        return vectors
