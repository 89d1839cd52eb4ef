"""Which runtime executes a model: ``auto`` (the default), torch, ONNX Runtime fp32 or int8.

``"onnx"`` and ``"onnx-int8"`` export the loaded sentence-transformers model to ONNX once,
locally, and cache the file (see :mod:`hybridsearch.models.onnx_runtime`); int8 is ONNX
Runtime's dynamic quantization of that export. Both run on CPU only. ``"auto"`` is int8 on
CPU, falling back to torch when the export cannot be made, and torch elsewhere (see
:func:`candidates`). This module holds the names, their validation, the order ``auto``
tries them in and the cache location, and imports nothing heavy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import platformdirs

from hybridsearch.errors import InvalidInputError

BackendName = Literal["auto", "torch", "onnx", "onnx-int8"]
#: A runtime a model actually runs on: every backend name but ``auto``.
RuntimeName = Literal["torch", "onnx", "onnx-int8"]

#: Every accepted backend name, in the order error messages list them.
BACKENDS: tuple[BackendName, ...] = get_args(BackendName)
#: The runtimes, for comparisons of one against another (``bench/backends.py``).
RUNTIMES: tuple[RuntimeName, ...] = get_args(RuntimeName)
#: The backend used when none is configured.
DEFAULT_BACKEND: BackendName = "auto"
#: What ``auto`` runs on CPU, first choice first. int8 kept nDCG@10 at >= 0.99 of fp32 torch
#: on SciFact train for the embedder and a reranker at a fraction of the time (bench/NOTES.md,
#: "CPU backends"); torch is the fallback that always loads.
AUTO_ON_CPU: tuple[RuntimeName, ...] = ("onnx-int8", "torch")

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


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class InferenceBackend:
    """A backend with its runtime settings; part of the key under which models are shared.

    ``threads`` is ONNX Runtime's intra-op thread count (torch's is process-wide and set
    elsewhere); ``cache_dir`` is where exports are kept. Both are ``None`` for torch, so every
    torch user of a model shares one copy whatever they asked for.
    """

    name: RuntimeName = "torch"
    threads: int | None = None
    cache_dir: Path | None = None

    @classmethod
    def candidates(
        cls,
        name: object,
        *,
        device: str,
        threads: int | None,
        cache_dir: str | Path | None,
        what: str = "backend",
    ) -> tuple[InferenceBackend, ...]:
        """The runtimes to try for backend ``name``, first choice first.

        An explicit name is one runtime; ``auto`` is :data:`AUTO_ON_CPU` on CPU and torch on
        any other device. ONNX runtimes get ``threads`` (default: :func:`usable_cores`) and
        ``cache_dir`` (default: :func:`default_cache_dir`).
        """
        backend = validate_backend(name, what)
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
        ):
            raise InvalidInputError(f"threads must be a positive integer, got {threads!r}")
        if backend == "auto":
            names: tuple[RuntimeName, ...] = AUTO_ON_CPU if device == "cpu" else ("torch",)
        elif device != "cpu" and backend != "torch":
            raise InvalidInputError(
                f"{what} {backend!r} runs on CPU only (ONNX Runtime's CPU provider); "
                f"got device={device!r}: use device='cpu', or backend='torch' for {device!r}"
            )
        else:
            names = (backend,)
        folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        onnx_threads = threads or usable_cores()
        return tuple(
            cls() if runtime == "torch" else cls(runtime, onnx_threads, folder.resolve())
            for runtime in names
        )

    @property
    def is_onnx(self) -> bool:
        return self.name != "torch"
