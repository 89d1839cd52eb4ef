"""Dense text embeddings from a sentence-transformers model.

Loaded models are cached per (resolved path, device) for the whole process, so every
:class:`Embedder` (one per collection, say) for the same model shares one copy of the weights.
Per-embedder settings such as ``max_length`` are applied per call, never on the shared model.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from hybridsearch.errors import EmbeddingError, InvalidInputError, ModelError
from hybridsearch.models.backend import BackendName, InferenceBackend
from hybridsearch.models.resolve import (
    SharedModels,
    configure_torch_threads,
    load_failure_message,
    resolve_model_path,
)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

ENV_VAR = "HYBRIDSEARCH_EMBEDDING_MODEL"


def _load(
    resolved: str, device: str, local_files_only: bool, backend: InferenceBackend
) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolved, device=device, local_files_only=local_files_only)
    model.eval()
    if backend.is_onnx:
        from hybridsearch.models.onnx_runtime import use_onnx

        use_onnx(model, backend, resolved)
    return model


#: One loaded embedding model per (resolved name or path, device, backend), shared by every
#: Embedder.
_models: SharedModels[SentenceTransformer] = SharedModels(_load)
clear_model_cache = _models.clear


class Embedder:
    """Embeds documents and queries with a sentence-transformers model.

    ``query_prompt`` and ``document_prompt`` are prefixes some models were trained with
    (E5: ``"query: "`` / ``"passage: "``; BGE: a query instruction). The model loads on first
    use; call :meth:`load` to load it eagerly and surface a :class:`ModelError` early.

    ``backend`` picks the runtime: ``"torch"`` (default), or on CPU ``"onnx"`` (ONNX Runtime,
    fp32) or ``"onnx-int8"`` (dynamically quantized), which need the ``onnx`` extra. The
    ONNX file is exported from the loaded weights on first use and cached in
    ``onnx_cache_dir`` (default: ``$HYBRIDSEARCH_ONNX_CACHE_DIR`` or the user cache folder);
    ONNX Runtime uses ``torch_threads`` intra-op threads, 1 when unset.
    """

    def __init__(
        self,
        model: str,
        *,
        device: str = "cpu",
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        normalize: bool = True,
        torch_threads: int | None = None,
        backend: BackendName | str = "torch",
        onnx_cache_dir: str | Path | None = None,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise InvalidInputError(f"embedding model must be a non-empty string, got {model!r}")
        self._backend = InferenceBackend.build(
            backend,
            device=device,
            threads=torch_threads,
            cache_dir=onnx_cache_dir,
            what="embedding backend",
        )
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be positive, got {batch_size}")
        if max_length is not None and max_length < 1:
            raise InvalidInputError(f"max_length must be positive, got {max_length}")
        self._model_id = model
        self._device = device
        self._query_prompt = query_prompt or None
        self._document_prompt = document_prompt or None
        self._batch_size = batch_size
        self._max_length = max_length
        self._normalize = normalize
        self._torch_threads = torch_threads
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Embedder({self._model_id!r}, device={self._device!r}, backend={self.backend!r})"

    @property
    def model_id(self) -> str:
        """The model name or path this embedder was created with."""
        return self._model_id

    @property
    def device(self) -> str:
        return self._device

    @property
    def backend(self) -> BackendName:
        """The runtime: ``"torch"``, ``"onnx"`` or ``"onnx-int8"``."""
        return self._backend.name

    @property
    def loaded(self) -> bool:
        """Whether :meth:`load` has run: the next embedding will not load weights first."""
        return self._model is not None

    @property
    def dimensions(self) -> int:
        """Length of each embedding vector (loads the model)."""
        dim = self.load().get_embedding_dimension()
        if dim is None:
            raise ModelError(f"embedding model {self._model_id!r} does not report a dimension")
        return int(dim)

    def load(self) -> SentenceTransformer:
        """Load (or fetch from the process cache) the model; failures raise :class:`ModelError`."""
        if self._model is not None:
            return self._model
        with self._lock:
            if self._model is None:
                if self._torch_threads is not None:
                    configure_torch_threads(self._torch_threads)
                resolved = resolve_model_path(self._model_id)
                try:
                    self._model = _models.get(resolved, self._device, self._backend)
                except ModelError:
                    raise
                except Exception as exc:
                    message = load_failure_message(
                        "embedding model", self._model_id, resolved, exc, ENV_VAR
                    )
                    raise ModelError(message) from exc
            return self._model

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

    def embed_query(self, text: str) -> npt.NDArray[np.float32]:
        """Embed one query with the query prompt; returns float32 of shape (dimensions,)."""
        if not isinstance(text, str):
            raise InvalidInputError(f"query must be a string, got {type(text).__name__}")
        vector: npt.NDArray[np.float32] = self._encode([text], self._query_prompt)[0]
        return vector

    def _encode(self, texts: list[str], prompt: str | None) -> npt.NDArray[np.float32]:
        import torch

        model = self.load()
        kwargs: dict[str, Any] = {}
        if self._max_length is not None:
            kwargs["processing_kwargs"] = {"text": {"max_length": self._max_length}}
        try:
            with torch.inference_mode():
                raw = model.encode(
                    texts,
                    prompt=prompt,
                    batch_size=self._batch_size,
                    show_progress_bar=False,
                    convert_to_numpy=True,
                    normalize_embeddings=self._normalize,
                    **kwargs,
                )
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
