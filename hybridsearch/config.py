"""Settings read from ``HYBRIDSEARCH_*`` environment variables.

| variable | default | meaning |
|---|---|---|
| HYBRIDSEARCH_DATABASE_URL | unset | external PostgreSQL with pgvector; unset = embedded server |
| HYBRIDSEARCH_DATA_DIR | user data dir / hybridsearch | where the embedded server keeps its files |
| HYBRIDSEARCH_EMBEDDING_MODEL | picked from the text | model name or path for new collections |
| HYBRIDSEARCH_RERANKER_MODEL | unset | cross-encoder name or path; unset = no reranking |
| HYBRIDSEARCH_DEVICE | cpu | torch device for both models |
| HYBRIDSEARCH_EMBEDDING_BACKEND | auto | `auto` (int8 on CPU), `torch`, `onnx`, `onnx-int8` |
| HYBRIDSEARCH_RERANKER_BACKEND | auto | the same choice for the reranker |
| HYBRIDSEARCH_ONNX_CACHE_DIR | user cache dir / hybridsearch / onnx | where ONNX exports are kept |
| HYBRIDSEARCH_TORCH_THREADS | every usable core | intra-op threads of one CPU model call |
| HYBRIDSEARCH_MAX_QUERY_CHARS | 4096 | longest accepted query string |
| HYBRIDSEARCH_MAX_DOCUMENT_CHARS | 2000000 | longest accepted document text |
| HYBRIDSEARCH_STATEMENT_TIMEOUT_MS | 30000 | per-statement timeout for searches |
| HYBRIDSEARCH_RERANK_TIMEOUT_MS | unset | budget for the rerank stage; past it, fused order |
| HYBRIDSEARCH_POOL_SIZE | 4 | connections per client |
| HYBRIDSEARCH_POOL_TIMEOUT_MS | 30000 | wait for a free connection before failing |

With HYBRIDSEARCH_EMBEDDING_MODEL unset, a collection created without a model picks one
from its first documents: all-MiniLM-L6-v2, or a Chinese model for CJK text (see
:mod:`hybridsearch.models.picker`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from hybridsearch.errors import ConfigurationError, InvalidInputError
from hybridsearch.models.backend import (
    DEFAULT_BACKEND,
    BackendName,
    usable_cores,
    validate_backend,
)

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not an integer") from None
    if value <= 0:
        raise ConfigurationError(f"{name}={raw!r} must be a positive integer")
    return value


def _backend(env: Mapping[str, str], name: str) -> BackendName:
    raw = env.get(name)
    if raw is None or raw == "":
        return DEFAULT_BACKEND
    try:
        return validate_backend(raw, name)
    except InvalidInputError as exc:
        raise ConfigurationError(str(exc)) from None


@dataclass(frozen=True)
class Settings:
    """Runtime configuration; build it with :meth:`from_env` or directly in code."""

    database_url: str | None = None
    data_dir: Path = field(default_factory=lambda: Path(platformdirs.user_data_dir("hybridsearch")))
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    #: True when ``embedding_model`` was named on purpose (``HYBRIDSEARCH_EMBEDDING_MODEL``
    #: set, even to the default): every new collection then gets it as given. Left False
    #: with the default model, a collection created without a model picks one from its
    #: text (see :attr:`picks_embedding_model`).
    embedding_model_explicit: bool = False
    reranker_model: str | None = None
    device: str = "cpu"
    torch_threads: int = field(default_factory=usable_cores)
    embedding_backend: BackendName = DEFAULT_BACKEND
    reranker_backend: BackendName = DEFAULT_BACKEND
    onnx_cache_dir: Path | None = None
    max_query_chars: int = 4096
    max_document_chars: int = 2_000_000
    statement_timeout_ms: int = 30_000
    rerank_timeout_ms: int | None = None
    pool_size: int = 4
    pool_timeout_ms: int = 30_000

    @property
    def rerank_timeout_s(self) -> float | None:
        """The rerank budget in seconds, or None for no budget."""
        return None if self.rerank_timeout_ms is None else self.rerank_timeout_ms / 1000

    @property
    def picks_embedding_model(self) -> bool:
        """Whether a collection created without a model picks one from its text: unless
        a model was named, by ``HYBRIDSEARCH_EMBEDDING_MODEL`` or in code."""
        return not self.embedding_model_explicit and self.embedding_model == DEFAULT_EMBEDDING_MODEL

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every ``HYBRIDSEARCH_*`` variable, falling back to the defaults above."""
        env = os.environ if env is None else env
        defaults = cls()
        data_dir = env.get("HYBRIDSEARCH_DATA_DIR")
        onnx_dir = env.get("HYBRIDSEARCH_ONNX_CACHE_DIR")
        return cls(
            database_url=env.get("HYBRIDSEARCH_DATABASE_URL") or None,
            data_dir=Path(data_dir).expanduser() if data_dir else defaults.data_dir,
            embedding_model=env.get("HYBRIDSEARCH_EMBEDDING_MODEL") or DEFAULT_EMBEDDING_MODEL,
            embedding_model_explicit=bool(env.get("HYBRIDSEARCH_EMBEDDING_MODEL")),
            reranker_model=env.get("HYBRIDSEARCH_RERANKER_MODEL") or None,
            device=env.get("HYBRIDSEARCH_DEVICE") or "cpu",
            torch_threads=_int(env, "HYBRIDSEARCH_TORCH_THREADS", defaults.torch_threads),
            embedding_backend=_backend(env, "HYBRIDSEARCH_EMBEDDING_BACKEND"),
            reranker_backend=_backend(env, "HYBRIDSEARCH_RERANKER_BACKEND"),
            onnx_cache_dir=Path(onnx_dir).expanduser() if onnx_dir else None,
            max_query_chars=_int(env, "HYBRIDSEARCH_MAX_QUERY_CHARS", defaults.max_query_chars),
            max_document_chars=_int(
                env, "HYBRIDSEARCH_MAX_DOCUMENT_CHARS", defaults.max_document_chars
            ),
            statement_timeout_ms=_int(
                env, "HYBRIDSEARCH_STATEMENT_TIMEOUT_MS", defaults.statement_timeout_ms
            ),
            rerank_timeout_ms=(
                _int(env, "HYBRIDSEARCH_RERANK_TIMEOUT_MS", 1)
                if env.get("HYBRIDSEARCH_RERANK_TIMEOUT_MS")
                else None
            ),
            pool_size=_int(env, "HYBRIDSEARCH_POOL_SIZE", defaults.pool_size),
            pool_timeout_ms=_int(env, "HYBRIDSEARCH_POOL_TIMEOUT_MS", defaults.pool_timeout_ms),
        )
