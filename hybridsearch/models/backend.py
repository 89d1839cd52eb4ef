"""Which runtime executes a model: torch (the default), ONNX Runtime in fp32, or int8.

``"onnx"`` and ``"onnx-int8"`` export the loaded sentence-transformers model to ONNX once,
locally, and cache the file (see :mod:`hybridsearch.models.onnx_runtime`); int8 is ONNX
Runtime's dynamic quantization of that export. Both run on CPU only. This module holds the
names, their validation and the cache location, and imports nothing heavy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import platformdirs

from hybridsearch.errors import InvalidInputError

BackendName = Literal["torch", "onnx", "onnx-int8"]

#: Every accepted backend name, in the order error messages list them.
BACKENDS: tuple[BackendName, ...] = get_args(BackendName)

#: Overrides where ONNX exports are cached (default: the user cache dir / hybridsearch / onnx).
CACHE_ENV_VAR = "HYBRIDSEARCH_ONNX_CACHE_DIR"


def validate_backend(value: object, what: str = "backend") -> BackendName:
    """``value`` as a backend name (surrounding space and case ignored), or InvalidInputError."""
    if isinstance(value, str):
        name = value.strip().lower()
        for backend in BACKENDS:
            if name == backend:
                return backend
    allowed = ", ".join(repr(b) for b in BACKENDS)
    raise InvalidInputError(f"{what} must be one of {allowed}; got {value!r}")


def default_cache_dir() -> Path:
    """Where exports go unless told otherwise: ``$HYBRIDSEARCH_ONNX_CACHE_DIR`` or the user
    cache folder (e.g. ``~/.cache/hybridsearch/onnx``)."""
    configured = os.environ.get(CACHE_ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_cache_dir("hybridsearch")) / "onnx"


@dataclass(frozen=True)
class InferenceBackend:
    """A backend with its runtime settings; part of the key under which models are shared.

    ``threads`` is ONNX Runtime's intra-op thread count (torch's is process-wide and set
    elsewhere); ``cache_dir`` is where exports are kept. Both are ``None`` for torch, so every
    torch user of a model shares one copy whatever they asked for.
    """

    name: BackendName = "torch"
    threads: int | None = None
    cache_dir: Path | None = None

    @classmethod
    def build(
        cls,
        name: object,
        *,
        device: str,
        threads: int | None,
        cache_dir: str | Path | None,
        what: str = "backend",
    ) -> InferenceBackend:
        """Validate ``name`` and fill in defaults: 1 thread, :func:`default_cache_dir`."""
        backend = validate_backend(name, what)
        if backend == "torch":
            return cls()
        if device != "cpu":
            raise InvalidInputError(
                f"{what} {backend!r} runs on CPU only (ONNX Runtime's CPU provider); "
                f"got device={device!r}: use device='cpu', or backend='torch' for {device!r}"
            )
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
        ):
            raise InvalidInputError(f"threads must be a positive integer, got {threads!r}")
        folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        return cls(backend, threads or 1, folder.resolve())

    @property
    def is_onnx(self) -> bool:
        return self.name != "torch"
