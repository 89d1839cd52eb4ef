"""Embedders and rerankers built the way :class:`~hybridsearch.config.Settings` says.

Device, torch threads, inference backend and ONNX cache come from the settings, so the
sync and async services and the evaluation CLI all run a model the same way.
"""

from __future__ import annotations

from hybridsearch.config import Settings
from hybridsearch.models.embedder import Embedder
from hybridsearch.models.reranker import Reranker


def configured_embedder(
    model: str,
    settings: Settings,
    *,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
) -> Embedder:
    return Embedder(
        model,
        device=settings.device,
        query_prompt=query_prompt,
        document_prompt=document_prompt,
        torch_threads=settings.torch_threads,
        backend=settings.embedding_backend,
        onnx_cache_dir=settings.onnx_cache_dir,
    )


def configured_reranker(model: str, settings: Settings) -> Reranker:
    return Reranker(
        model,
        device=settings.device,
        torch_threads=settings.torch_threads,
        backend=settings.reranker_backend,
        onnx_cache_dir=settings.onnx_cache_dir,
    )
