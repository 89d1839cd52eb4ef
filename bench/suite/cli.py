"""``bench/run``: arguments, the order of the stages, the markdown table and the JSON.

Every ratio is ours / baseline with both measured in this run on the same data; the
targets are issue 5's (and issue 21's for the default models) and are printed for
reading only: nothing here fails on timing.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psycopg
from pgvector.psycopg import register_vector

from hybridsearch.config import Settings
from hybridsearch.db import migrate
from hybridsearch.db.connection import database_url

from . import baseline, data, hnsw, load, search
from .report import BEFORE_BUILD, DEFAULT_BUILD, ratios_from, table

COLLECTION = "bench_suite"
TOP_K = 50
#: Enough for the HNSW graph of 1M 384-d vectors to be built in memory.
MAINTENANCE_WORK_MEM = "2GB"
#: (chunks, queries for latency, queries for recall, queries for the model figures,
#: candidates reranked in the rerank figure). Smoke reranks 10 candidates and skips the
#: end-to-end figures: at 1 torch thread 50 pairs of ~500 tokens take seconds.
MODES = {
    "smoke": (10_000, 30, 20, 2, 10),
    "quick": (100_000, 60, 200, 3, TOP_K),
    "full": (1_000_000, 200, 200, 5, TOP_K),
}
#: Independent HNSW builds of each configuration (bench/suite/hnsw.py): a parallel build
#: is not deterministic, so the full run measures three.
BUILDS = {"smoke": 1, "quick": 1, "full": 3}
#: Issue 21's figures of the default models against bare fp32 torch (bench/suite/defaults.py):
#: (SciFact abstracts ingested, queries reranked, queries per client in the concurrency
#: figure). Smoke skips them: fp32 torch takes seconds per 50 SciFact pairs.
DEFAULTS_MODES = {"quick": (500, 10, 3), "full": (2_000, 30, 5)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--chunks", type=int, help="chunks to load (default 1,000,000)")
    size.add_argument("--quick", action="store_true", help="100,000 chunks, <= 10 minutes")
    size.add_argument("--smoke", action="store_true", help="10,000 chunks, <= 2 minutes (CI)")
    parser.add_argument("--queries", type=int, help="queries per latency figure")
    parser.add_argument("--json", type=Path, help="write {ratios, figures} here")
    parser.add_argument("--no-models", action="store_true", help="skip rerank/embed/e2e")
    parser.add_argument("--no-halfvec", action="store_true", help="skip the halfvec index")
    return parser.parse_args()


def peak_rss_mb() -> float:
    """Peak resident set of this process (kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if platform.system() == "Darwin" else peak / 1024


def main() -> None:
    args = parse_args()
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    chunks, n_queries, n_recall, n_models, rerank_k = MODES[mode]
    chunks = args.chunks or chunks
    n_queries = args.queries or n_queries
    started = time.perf_counter()
    figures: dict[str, Any] = {"mode": mode, "chunks": chunks, "top_k": TOP_K}

    def stage(name: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {name}", flush=True)

    settings = Settings.from_env()
    url = database_url(settings)
    migrate.upgrade(url)
    texts, vectors = data.queries(max(n_queries, n_recall))
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        stage(f"ingest {chunks:,} chunks: ours vs COPY BINARY into a bare table")
        collection = load.fresh_collection(conn, COLLECTION)
        loaded = load.load(conn, collection, chunks, MAINTENANCE_WORK_MEM)
        figures["ingest"] = asdict(loaded)
        figures["chunks"] = loaded.bulk_chunks + loaded.incremental_chunks
        figures["size_bytes"] = load.sizes(conn, collection)
        q_texts, q_vectors = texts[:n_queries], vectors[:n_queries]
        stage("hybrid TopK vs bare HNSW TopK")
        figures["hybrid"] = search.hybrid_vs_hnsw(conn, collection, q_texts, q_vectors, TOP_K)
        stage("keyword TopK vs ts_rank_cd and vs release 0.1.0")
        baseline.install_v010(conn)
        figures["keyword"] = search.keyword_vs_ts_rank(conn, collection, q_texts, TOP_K)
        stage("keyword TopK vs ts_rank_cd and vs release 0.1.0, content-word queries")
        figures["keyword_content"] = search.keyword_vs_ts_rank(
            conn, collection, data.content_queries(n_queries), TOP_K
        )
        baseline.drop_v010(conn)
        stage("filtered hybrid at 10 % and 1 %")
        figures["filtered"] = search.filtered(conn, collection, q_texts, q_vectors, TOP_K)
        if not args.no_models:
            from . import models

            stage("models: rerank stage, query embedding, end to end")
            figures["models"] = models.run(
                conn,
                collection,
                texts,
                vectors,
                rerank_queries=n_models,
                k=rerank_k,
                end_to_end_figures=mode != "smoke",
            )
            if mode in DEFAULTS_MODES:
                from . import defaults

                # After the models stage: it fixes torch at 1 thread for the process
                # first; these stages set the configured count around their own work.
                abstracts, rerank_queries, per_client = DEFAULTS_MODES[mode]
                stage(
                    f"defaults vs bare fp32 torch: SciFact ingest ({abstracts:,} abstracts),"
                    f" rerank ({rerank_queries} queries), reranked search under concurrency"
                )
                out = defaults.run(
                    settings,
                    abstracts=abstracts,
                    rerank_queries=rerank_queries,
                    per_client=per_client,
                )
                for key in [k for k in out if k.startswith("concurrency_")]:
                    figures[key] = out.pop(key)
                figures["defaults"] = out
        stage(f"exact top 10 of {n_recall} queries (a sort of every chunk)")
        recall_vectors = vectors[:n_recall]
        exact = hnsw.exact_lists(conn, collection, recall_vectors)
        stage("recall@10 vs exact search" + ("" if args.no_halfvec else ", halfvec index"))
        figures["recall"] = search.recall(
            conn, collection, recall_vectors, exact, TOP_K, halfvec=not args.no_halfvec
        )
        configurations = list(dict.fromkeys((BEFORE_BUILD, DEFAULT_BUILD)))
        stage(f"HNSW builds: {configurations} (m, ef_construction), {BUILDS[mode]} each")
        figures["hnsw_builds"] = hnsw.builds(
            conn,
            collection,
            recall_vectors,
            exact,
            TOP_K,
            configurations,
            BUILDS[mode],
            MAINTENANCE_WORK_MEM,
        )
        conn.execute("DROP SCHEMA hybridsearch_bench CASCADE")
    figures["peak_rss_mb"] = peak_rss_mb()
    figures["seconds"] = time.perf_counter() - started
    stage("done")
    ratios = ratios_from(figures)
    print()
    print(table(figures, ratios))
    if args.json:
        args.json.write_text(json.dumps({"ratios": ratios, "figures": figures}, indent=2))
        print(f"\nwrote {args.json}")
