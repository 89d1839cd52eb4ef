"""Keyword TopK latency: our BM25 (impact tiers) against a ts_rank_cd OR-query baseline.

    python bench/keyword.py [--chunks 1000000] [--queries 200] [--top-k 50] [--json OUT]

Builds (or reuses) a collection of synthetic Zipf text of ~150 words a chunk, then
times both queries on the same data in the same run. Never fails on timing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from suite.search import TS_RANK, TSQUERY  # type: ignore[import-not-found]
from synthetic import Zipf, load_chunks, unit_vectors, vocabulary  # type: ignore[import-not-found]

from hybridsearch.config import Settings
from hybridsearch.db import migrate
from hybridsearch.db.connection import database_url

OURS = "SELECT * FROM hybridsearch.search_keyword(%(name)s, %(query)s, %(k)s)"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def ensure_collection(conn: psycopg.Connection, name: str, chunks: int) -> int:
    row = conn.execute(
        "SELECT c.collection_id, (SELECT sum(s.chunks) FROM hybridsearch.collection_stats s"
        " WHERE s.collection_id = c.collection_id) FROM hybridsearch.collections c"
        " WHERE c.name = %s",
        (name,),
    ).fetchone()
    if row is not None and row[1] == chunks:
        print(f"reusing {name} ({chunks:,} chunks)")
        return int(row[0])
    if row is not None:
        conn.execute("SELECT hybridsearch.drop_collection(%s)", (name,))
    cid = conn.execute(
        "SELECT (hybridsearch.create_collection(%s, 'synthetic', 8, 'cosine', 'english'))"
        ".collection_id",
        (name,),
    ).fetchone()[0]  # type: ignore[index]
    # The vector index is not what this benchmark measures; skip its build cost.
    conn.execute(f"DROP INDEX hybridsearch.chunks_{int(cid)}_embedding_idx")
    conn.commit()
    rng = np.random.default_rng(1)
    zipf = Zipf(vocabulary(50_000))
    vectors = iter(unit_vectors(chunks, 8, rng))
    print(f"loading {chunks:,} chunks of ~150 Zipf words into {name} ...")
    seconds = load_chunks(conn, name, zipf.texts(chunks, 150, rng), vectors, total=chunks)
    print(f"loaded in {seconds:.0f}s")
    return int(cid)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    url = database_url(Settings.from_env())
    migrate.upgrade(url)
    name = f"bench_keyword_{args.chunks}"
    with psycopg.connect(url) as conn:
        register_vector(conn)
        cid = ensure_collection(conn, name, args.chunks)
        conn.commit()
        conn.autocommit = True
        queries = Zipf(vocabulary(50_000)).queries(args.queries, np.random.default_rng(7))
        timings: dict[str, list[float]] = {"bm25": [], "ts_rank_cd": []}
        base = {"name": name, "analyzer": "english", "cid": cid, "k": args.top_k}
        params = [
            {
                **base,
                "query": q,
                # the baseline gets its OR query ready-made (not timed; our parsing is)
                "tsquery": conn.execute(TSQUERY, (base["analyzer"], q)).fetchone()[0],
            }  # type: ignore[index]
            for q in queries
        ]
        for p in params[:20]:  # warm the caches for both
            conn.execute(OURS, p).fetchall()
            conn.execute(TS_RANK, p).fetchall()
        returned = []
        for i, p in enumerate(params):
            order = [("bm25", OURS), ("ts_rank_cd", TS_RANK)]
            for label, sql in order if i % 2 == 0 else order[::-1]:
                started = time.perf_counter()
                rows = conn.execute(sql, p).fetchall()
                timings[label].append((time.perf_counter() - started) * 1000)
                if label == "bm25":
                    returned.append(len(rows))

    result = {
        "chunks": args.chunks,
        "queries": len(queries),
        "top_k": args.top_k,
        "mean_results": statistics.mean(returned),
        "ms": {
            label: {"p50": percentile(v, 50), "p95": percentile(v, 95), "mean": statistics.mean(v)}
            for label, v in timings.items()
        },
    }
    ours, base = result["ms"]["bm25"], result["ms"]["ts_rank_cd"]  # type: ignore[index]
    result["ratios"] = {"p50": ours["p50"] / base["p50"], "p95": ours["p95"] / base["p95"]}
    print(f"\n| keyword top-{args.top_k} at {args.chunks:,} chunks | p50 ms | p95 ms | mean ms |")
    print("|---|---|---|---|")
    for label in ("bm25", "ts_rank_cd"):
        m = result["ms"][label]  # type: ignore[index]
        print(f"| {label} | {m['p50']:.1f} | {m['p95']:.1f} | {m['mean']:.1f} |")
    r = result["ratios"]  # type: ignore[assignment]
    print(f"| ratio bm25 / ts_rank_cd | {r['p50']:.3f} | {r['p95']:.3f} | |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
