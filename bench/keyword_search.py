"""Keyword TopK latency: this tree's keyword engine against release 0.1.0's, same data, same run.

    python bench/keyword_search.py [--chunks 1000000] [--queries 200] [--top-k 50]
                            [--kinds plain,long,filtered,exclusion,phrase] [--no-ts-rank]
                            [--json OUT]

Builds (or reuses) a collection of synthetic Zipf text of ~150 words a chunk (the
upgrade to head installs this tree's functions), and installs release 0.1.0's keyword
engine beside them in schema hybridsearch_v010 (see suite/baseline.py). Each kind of
query is then timed on both, interleaved, and their rankings compared: both are exact,
so they must be identical. Plain queries are also timed against a ts_rank_cd OR query.
Never fails on timing; exits 1 if a ranking differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg.types.json import Jsonb
from suite.baseline import (  # type: ignore[import-not-found]
    V010_KEYWORD,
    drop_v010,
    install_v010,
    same_ranking,
)
from suite.search import TS_RANK, TSQUERY  # type: ignore[import-not-found]
from suite.timing import interleaved, summary  # type: ignore[import-not-found]
from synthetic import Zipf, load_chunks, unit_vectors, vocabulary  # type: ignore[import-not-found]

from hybridsearch.config import Settings
from hybridsearch.db import migrate
from hybridsearch.db.connection import database_url

# Like with like: keyword_topk, the engine behind search_keyword (chunk_id, rank, score),
# against 0.1.0's search_keyword, which returned the same three columns. This tree's
# search_keyword adds each chunk's document_id (a lookup by key per returned chunk), which
# 0.1.0's did not; the ts_rank_cd baseline looks up no document either.
OURS = "SELECT * FROM hybridsearch.keyword_topk(%s, %s, %s, %s)"
VOCABULARY = 50_000
#: 1 % of the chunks (load_chunks sets bucket = document_id % 100): impact tiers.
FILTER = {"bucket": 7}
#: What each kind of query exercises in keyword_topk at 10,000 chunks or more.
KINDS = {
    "plain": "2-5 words (term coverage)",
    "long": "6-10 words (impact tiers)",
    "filtered": "2-5 words, filter keeping 1 % (impact tiers)",
    "exclusion": "2-4 words and -word (0.1.0: MaxScore)",
    "phrase": '"two words" of a chunk and 1-2 words (0.1.0: MaxScore)',
}


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
    zipf = Zipf(vocabulary(VOCABULARY))
    vectors = iter(unit_vectors(chunks, 8, rng))
    print(f"loading {chunks:,} chunks of ~150 Zipf words into {name} ...")
    seconds = load_chunks(conn, name, zipf.texts(chunks, 150, rng), vectors, total=chunks)
    print(f"loaded in {seconds:.0f}s")
    return int(cid)


def queries(
    conn: psycopg.Connection, cid: int, kind: str, n: int
) -> list[tuple[str, Jsonb | None]]:
    """``n`` (query, filter) of one kind, the same on every run."""
    zipf = Zipf(vocabulary(VOCABULARY))
    rng = np.random.default_rng([7, list(KINDS).index(kind)])
    if kind == "plain":  # the queries this bench has always timed
        return [(q, None) for q in zipf.queries(n, np.random.default_rng(7))]
    p = zipf.probabilities(10)

    def words(low: int, high: int) -> list[str]:
        size = int(rng.integers(low, high + 1))
        return [str(w) for w in rng.choice(zipf.words, size=size, replace=False, p=p)]

    if kind == "long":
        return [(" ".join(words(6, 10)), None) for _ in range(n)]
    if kind == "filtered":
        return [(q, Jsonb(FILTER)) for q in zipf.queries(n, rng)]
    if kind == "exclusion":
        return [(" ".join([*words(2, 4), "-" + words(1, 1)[0]]), None) for _ in range(n)]
    contents = [
        str(r[0]).split()
        for r in conn.execute(
            "SELECT content FROM hybridsearch.chunks WHERE collection_id = %s"
            " ORDER BY chunk_id LIMIT %s",
            (cid, n),
        ).fetchall()
    ]
    found = []
    for text in contents:
        at = int(rng.integers(0, len(text) - 1))
        found.append((f'"{text[at]} {text[at + 1]}" ' + " ".join(words(1, 2)), None))
    return found


def time_kind(
    conn: psycopg.Connection, name: str, kind: str, batch: list[tuple[str, Jsonb | None]], k: int
) -> dict[str, Any]:
    """Both engines on every query of ``batch``, interleaved, each once untimed first."""
    results: dict[str, list[Any]] = {"new": [], "v010": []}
    variants: dict[str, Callable[[int], Any]] = {
        "new": lambda i: conn.execute(OURS, (name, batch[i][0], k, batch[i][1])).fetchall(),
        "v010": lambda i: conn.execute(
            V010_KEYWORD, (name, batch[i][0], k, batch[i][1])
        ).fetchall(),
    }
    samples = interleaved(
        list(range(len(batch))),
        variants,
        warmup=len(batch),
        on_result=lambda variant, rows: results[variant].append(rows),
    )
    differ = [
        batch[i][0]
        for i, (ours, base) in enumerate(zip(results["new"], results["v010"], strict=True))
        if not same_ranking(ours, base)
    ]
    return {
        "what": KINDS[kind],
        "ms": {variant: summary(values) for variant, values in samples.items()},
        "mean_results": float(np.mean([len(r) for r in results["new"]])),
        "identical": len(batch) - len(differ),
        "differ": differ[:5],
    }


def time_ts_rank(
    conn: psycopg.Connection, name: str, cid: int, batch: list[tuple[str, Jsonb | None]], k: int
) -> dict[str, Any]:
    """Plain queries: ours against a ts_rank_cd OR query handed its tsquery ready-made
    (not timed; our parsing is)."""
    tsqueries = [conn.execute(TSQUERY, ("english", q)).fetchone()[0] for q, _ in batch]  # type: ignore[index]
    samples = interleaved(
        list(range(len(batch))),
        {
            "bm25": lambda i: conn.execute(OURS, (name, batch[i][0], k, None)).fetchall(),
            "ts_rank_cd": lambda i: conn.execute(
                TS_RANK, {"tsquery": tsqueries[i], "cid": cid, "k": k}
            ).fetchall(),
        },
        warmup=20,
    )
    return {variant: summary(values) for variant, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help="comma-separated: " + ", ".join(KINDS)
    )
    parser.add_argument("--no-ts-rank", action="store_true", help="skip the ts_rank_cd baseline")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    kinds = [kind for kind in args.kinds.split(",") if kind]
    if unknown := set(kinds) - set(KINDS):
        parser.error(f"unknown kinds {sorted(unknown)}; known: {', '.join(KINDS)}")

    url = database_url(Settings.from_env())
    migrate.upgrade(url)
    name = f"bench_keyword_{args.chunks}"
    result: dict[str, Any] = {"chunks": args.chunks, "queries": args.queries, "top_k": args.top_k}
    with psycopg.connect(url) as conn:
        register_vector(conn)
        cid = ensure_collection(conn, name, args.chunks)
        conn.commit()
        conn.autocommit = True
        install_v010(conn)
        try:
            result["kinds"] = {
                kind: time_kind(
                    conn, name, kind, queries(conn, cid, kind, args.queries), args.top_k
                )
                for kind in kinds
            }
            if not args.no_ts_rank and "plain" in kinds:
                plain = queries(conn, cid, "plain", args.queries)
                result["ts_rank_cd"] = time_ts_rank(conn, name, cid, plain, args.top_k)
        finally:
            drop_v010(conn)

    print(
        f"\n| keyword top-{args.top_k} at {args.chunks:,} chunks ({args.queries} queries each)"
        " | p50 ms new / 0.1.0 | ratio | p95 ms new / 0.1.0 | ratio | identical rankings |"
    )
    print("|---|---|---|---|---|---|")
    for kind, figures in result["kinds"].items():
        new, old = figures["ms"]["new"], figures["ms"]["v010"]
        figures["ratios"] = {q: new[q] / old[q] for q in ("p50", "p95")}
        print(
            f"| {kind}: {figures['what']} | {new['p50']:.2f} / {old['p50']:.2f}"
            f" | {figures['ratios']['p50']:.3f} | {new['p95']:.2f} / {old['p95']:.2f}"
            f" | {figures['ratios']['p95']:.3f} | {figures['identical']}/{args.queries} |"
        )
    if "ts_rank_cd" in result:
        ours, base = result["ts_rank_cd"]["bm25"], result["ts_rank_cd"]["ts_rank_cd"]
        print(
            f"\nplain queries against a ts_rank_cd OR query: p50 {ours['p50']:.1f} / "
            f"{base['p50']:.1f} ms ({ours['p50'] / base['p50']:.3f}), p95 {ours['p95']:.1f} / "
            f"{base['p95']:.1f} ms ({ours['p95'] / base['p95']:.3f})"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    differing = {k: f["differ"] for k, f in result["kinds"].items() if f["differ"]}
    if differing:
        print(f"\nrankings differ from 0.1.0's (first queries of each kind): {differing}")
        sys.exit(1)


if __name__ == "__main__":
    main()
