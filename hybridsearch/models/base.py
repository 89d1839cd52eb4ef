"""What the embedder and the reranker share: their settings, runtime and loading once.

:class:`Embedder` and :class:`Reranker` differ only in the sentence-transformers class
they wrap and in what they compute with it; the arguments they take, how they resolve a
name offline, configure torch threads, pick a backend and load the shared weights once
per process are written here, once (as sentence-transformers' own model classes share
``base/model.py``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from hybridsearch.errors import InvalidInputError, ModelError
from hybridsearch.models.backend import (
    BackendName,
    InferenceBackend,
    RuntimeName,
    validate_backend,
)
from hybridsearch.models.cores import CPU_CORES
from hybridsearch.models.resolve import (
    SharedModels,
    apply_torch_threads,
    configure_torch_threads,
    load_failure_message,
    resolve_model_path,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: A SentenceTransformer or CrossEncoder: both are torch modules.
T = TypeVar("T", bound="torch.nn.Module")
#: What a runner holds: one of those, or its torch-free stand-in (see ``light_runtime``).
M = TypeVar("M")

#: Why a runtime could not run a model, per (model kind, resolved model, device, runtime):
#: ``auto`` then goes straight to its next choice instead of retrying a failed export.
_unavailable: dict[tuple[str, str, str, InferenceBackend], str] = {}
_unavailable_lock = threading.Lock()


def load_sentence_transformers_model(
    factory: Callable[..., T],
    resolved: str,
    device: str,
    local_files_only: bool,
    backend: InferenceBackend,
) -> T:
    """Build a ``SentenceTransformer`` or ``CrossEncoder`` in eval mode on its backend."""
    apply_torch_threads()
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
        self._candidates = InferenceBackend.candidates(
            backend,
            device=device,
            threads=torch_threads,
            cache_dir=onnx_cache_dir,
            what=f"{self.kind.split()[0]} backend",
        )
        self._requested = validate_backend(backend)
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
        self._runtime: InferenceBackend | None = None
        self._fallback_note: str | None = None
        self._load_error: ModelError | None = None
        self._lock = threading.Lock()

    def shared(self) -> SharedModels[M]:
        """The process-wide cache of this kind of model (one copy of each set of weights)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._model_id!r}, device={self._device!r}, "
            f"backend={self.requested_backend!r})"
        )

    @property
    def model_id(self) -> str:
        """The model name or path this was created with."""
        return self._model_id

    @property
    def device(self) -> str:
        return self._device

    @property
    def requested_backend(self) -> BackendName:
        """The backend asked for: ``"auto"``, ``"torch"``, ``"onnx"`` or ``"onnx-int8"``."""
        return self._requested

    @property
    def backend(self) -> RuntimeName:
        """The runtime the model runs on: ``"torch"``, ``"onnx"`` or ``"onnx-int8"``.

        Under ``auto`` only loading can tell (an export may fail and fall back to torch), so
        this loads the model when it is not loaded yet.
        """
        if len(self._candidates) == 1:
            return self._candidates[0].name
        self.load()
        assert self._runtime is not None
        return self._runtime.name

    @property
    def fallback_note(self) -> str | None:
        """Why the model runs on a later choice of ``auto`` than the first, once loaded."""
        return self._fallback_note

    @contextmanager
    def _cores(self) -> Iterator[None]:
        """Hold the CPU cores a call on this model uses (see :mod:`hybridsearch.models.cores`)."""
        if self._device != "cpu":
            yield
            return
        runtime = self._runtime or self._candidates[0]
        if runtime.threads is not None:
            threads = runtime.threads
        else:
            import torch

            threads = torch.get_num_threads()
        with CPU_CORES.hold(threads):
            yield

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
            return self._load_first_that_runs(resolved)
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

    def _load_first_that_runs(self, resolved: str) -> M:
        """The model on the first candidate runtime that loads it; a failure of any but the
        last is remembered for the process and noted once (logged as a warning)."""
        *preferred, last = self._candidates
        for runtime in preferred:
            key = (self.kind, resolved, self._device, runtime)
            with _unavailable_lock:
                reason = _unavailable.get(key)
            fresh = reason is None
            if reason is None:
                try:
                    model = self.shared().get(resolved, self._device, runtime)
                except ModelError as exc:  # the runtime failed; anything else fails torch too
                    reason = str(exc)
                else:
                    self._runtime = runtime
                    return model
                with _unavailable_lock:
                    _unavailable[key] = reason
            self._fallback_note = (
                f"{self.kind} {self._model_id!r} runs on {last.name}: "
                f"{runtime.name} could not be used ({reason})"
            )
            if fresh:
                logger.warning("%s", self._fallback_note)
        model = self.shared().get(resolved, self._device, last)
        self._runtime = last
        return model
