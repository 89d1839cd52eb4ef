"""What the embedder and the reranker share: their settings, runtime and loading once.

:class:`Embedder` and :class:`Reranker` differ only in the sentence-transformers class
they wrap and in what they compute with it; the arguments they take, how they resolve a
name offline, configure torch threads, pick a backend and load the shared weights once
per process are written here, once (as sentence-transformers' own model classes share
``base/model.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from hybridsearch.errors import InvalidInputError, ModelError
from hybridsearch.models.backend import BackendName, InferenceBackend
from hybridsearch.models.resolve import (
    SharedModels,
    configure_torch_threads,
    load_failure_message,
    resolve_model_path,
)

if TYPE_CHECKING:
    import torch

#: A SentenceTransformer or CrossEncoder: both are torch modules.
M = TypeVar("M", bound="torch.nn.Module")


def load_sentence_transformers_model(
    factory: Callable[..., M],
    resolved: str,
    device: str,
    local_files_only: bool,
    backend: InferenceBackend,
) -> M:
    """Build a ``SentenceTransformer`` or ``CrossEncoder`` in eval mode on its backend."""
    model = factory(resolved, device=device, local_files_only=local_files_only)
    model.eval()
    if backend.is_onnx:
        from hybridsearch.models.onnx_runtime import use_onnx

        use_onnx(model, backend, resolved)
    return model


class ModelRunner(Generic[M]):
    """A model by name or path, its runtime and batch settings, loaded on first use.

    Subclasses name what they are (``kind``, for messages), the setting that picks them
    (``env_var``), the process-wide cache their weights live in (``shared``), and whether
    a failed load is remembered (``remember_load_error``) so that later calls fail at
    once instead of retrying a slow, doomed load.
    """

    kind: ClassVar[str]
    env_var: ClassVar[str]
    remember_load_error: ClassVar[bool] = False

    def __init__(
        self,
        model: str,
        *,
        device: str,
        batch_size: int,
        max_length: int | None,
        torch_threads: int | None,
        backend: BackendName | str,
        onnx_cache_dir: str | Path | None,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise InvalidInputError(f"{self.kind} must be a non-empty string, got {model!r}")
        self._backend = InferenceBackend.build(
            backend,
            device=device,
            threads=torch_threads,
            cache_dir=onnx_cache_dir,
            what=f"{self.kind.split()[0]} backend",
        )
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be positive, got {batch_size}")
        if max_length is not None and max_length < 1:
            raise InvalidInputError(f"max_length must be positive, got {max_length}")
        self._model_id = model
        self._device = device
        self._batch_size = batch_size
        self._max_length = max_length
        self._torch_threads = torch_threads
        self._model: M | None = None
        self._load_error: ModelError | None = None
        self._lock = threading.Lock()

    def shared(self) -> SharedModels[M]:
        """The process-wide cache of this kind of model (one copy of each set of weights)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._model_id!r}, device={self._device!r}, "
            f"backend={self.backend!r})"
        )

    @property
    def model_id(self) -> str:
        """The model name or path this was created with."""
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
        """Whether :meth:`load` has run: the next call will not load weights first."""
        return self._model is not None

    @property
    def load_error(self) -> ModelError | None:
        """The remembered error of a failed load (see ``remember_load_error``), or ``None``."""
        return self._load_error

    def load(self) -> M:
        """Load (or fetch from the process cache) the model; failures raise :class:`ModelError`."""
        if self._model is not None:
            return self._model
        with self._lock:
            if self._load_error is not None:
                raise self._load_error
            if self._model is None:
                self._model = self._load_once()
            return self._model

    def _load_once(self) -> M:
        if self._torch_threads is not None:
            configure_torch_threads(self._torch_threads)
        resolved = resolve_model_path(self._model_id)
        try:
            return self.shared().get(resolved, self._device, self._backend)
        except Exception as exc:
            error = (
                exc
                if isinstance(exc, ModelError)
                else ModelError(
                    load_failure_message(self.kind, self._model_id, resolved, exc, self.env_var)
                )
            )
            if self.remember_load_error:
                self._load_error = error
            if error is exc:
                raise
            raise error from exc
