"""Reranked search under concurrency: per-request latency with 1 client and with 4.

Each client is a thread with its own queries, all sharing one ``HybridSearch`` (the
service is thread-safe: a connection pool, models shared per process). The clients start
together at a barrier and send their queries one after another; each request's wall time
is one sample. Figures, not ratios: they show what oversubscribing the cores costs.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from hybridsearch.client import HybridSearch

from .timing import summary

CLIENTS = 4


def reranked_latency(
    service: HybridSearch, collection: str, groups: list[list[str]], k: int, n: int
) -> dict[str, Any]:
    """One client thread per group of queries; per-request milliseconds and stage p50s."""
    barrier = threading.Barrier(len(groups))
    lock = threading.Lock()
    samples: list[float] = []
    stages: dict[str, list[float]] = {"embed": [], "candidates": [], "rerank": []}

    def client(queries: list[str]) -> None:
        barrier.wait()
        for query in queries:
            started = time.perf_counter()
            result = service.search(collection, query, top_k=k, top_n=n)
            ms = (time.perf_counter() - started) * 1000
            if not result.reranked:
                raise SystemExit(f"reranked search fell back to fused order: {result.note}")
            with lock:
                samples.append(ms)
                for stage, values in stages.items():
                    values.append(result.timings_ms[stage])

    started = time.perf_counter()
    with ThreadPoolExecutor(len(groups)) as pool:
        for future in [pool.submit(client, g) for g in groups]:
            future.result()
    wall_s = time.perf_counter() - started
    return {
        "clients": len(groups),
        "ms": summary(samples),
        "stage_p50_ms": {s: float(np.median(v)) for s, v in stages.items()},
        "wall_s": wall_s,
        "requests_per_s": len(samples) / wall_s if wall_s > 0 else 0.0,
    }


def run(
    service: HybridSearch,
    collection: str,
    queries: list[str],
    per_client: int,
    k: int,
    n: int,
) -> dict[str, Any]:
    """``concurrency_1``: the first group alone; ``concurrency_{CLIENTS}``: every group at
    once, one thread each. ``queries`` holds ``CLIENTS * per_client`` queries."""
    groups = [queries[i * per_client : (i + 1) * per_client] for i in range(CLIENTS)]
    service.search(collection, queries[0], top_k=k, top_n=n)  # warm-up
    return {
        "concurrency_1": reranked_latency(service, collection, groups[:1], k, n),
        f"concurrency_{CLIENTS}": reranked_latency(service, collection, groups, k, n),
    }
