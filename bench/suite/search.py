"""Database-side search figures, each against a baseline on the same partition.

* hybrid: ``hybridsearch.search_hybrid`` TopK against one bare HNSW TopK query at the
  ef_search vector_topk uses (the collection's calibrated ef_search, raised to K);
* keyword: ``hybridsearch.keyword_topk`` (search_keyword's engine, without its lookup of
  each chunk's document_id, as neither baseline has one) against the ts_rank_cd OR query of
  bench/keyword_search.py (handed its tsquery ready-made, so parsing is timed for ours only),
  and against release 0.1.0's (see baseline.py), whose rankings must be the same;
* filtered hybrid at 10 % and 1 % selectivity against unfiltered hybrid, and how much of
  the exact filtered top K its vector leg finds;
* HNSW recall@10 against exact search (a sort of every chunk), and the same for a halfvec
  HNSW index built on the same partition, with its build time and query speed.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from hybridsearch.bulk import analyze_sql
from hybridsearch.collections import Collection

from .baseline import V010_KEYWORD, same_ranking
from .load import ANALYZER, index_name
from .timing import interleaved, summary

HYBRID = "SELECT * FROM hybridsearch.search_hybrid(%s, %s, %s, p_top_k => %s, p_filter => %s)"
# keyword_topk, not search_keyword: its (chunk_id, rank, score) are what 0.1.0's
# search_keyword returned, compared with same_ranking (see the module's docstring).
KEYWORD = "SELECT * FROM hybridsearch.keyword_topk(%s, %s, %s)"
TSQUERY = "SELECT (hybridsearch.parse_keyword_query(%s, %s)).highlight"
TS_RANK = """
SELECT c.chunk_id, pg_catalog.ts_rank_cd(c.fts, %(tsquery)s::tsquery) AS score
FROM hybridsearch.chunks c
WHERE c.collection_id = %(cid)s AND c.fts @@ %(tsquery)s::tsquery
ORDER BY score DESC, c.chunk_id
LIMIT %(k)s
"""
# The bare vector TopK: the expression and operator class of the partition's index.
NEAREST = (
    "SELECT chunk_id FROM {table}"
    " ORDER BY embedding::{type}({dims}) <=> %s::{type}({dims}) LIMIT %s"
)


EF_SEARCH = """
SELECT h.ef_search
FROM hybridsearch.collections AS c, hybridsearch.hnsw_settings(c.settings) AS h
WHERE c.name = %s
"""


def ef_search_for(conn: psycopg.Connection, collection: Collection, k: int) -> int:
    """What hybridsearch.vector_topk (search_vector's engine) sets for a TopK of ``k``:
    the collection's ef_search (calibrated after its index build), raised to ``k``."""
    row = conn.execute(EF_SEARCH, (collection.name,)).fetchone()
    assert row is not None, f"no collection {collection.name}"
    return max(int(row[0]), k)


def nearest_sql(collection: Collection, vector_type: str = "vector") -> sql.Composed:
    return sql.SQL(NEAREST).format(
        table=collection.partition,
        type=sql.SQL(vector_type),
        dims=sql.Literal(collection.dimensions),
    )


def force_index(conn: psycopg.Connection, on: bool) -> None:
    """Keep the planner on the HNSW index: pgvector costs it from ef_search, so on small
    partitions or larger ef_search it may pick an exact sequential scan instead."""
    conn.execute("SET enable_seqscan = off" if on else "RESET enable_seqscan")


def uses_index(conn: psycopg.Connection, query: sql.Composed, vector: np.ndarray, k: int) -> bool:
    plan = conn.execute(sql.SQL("EXPLAIN ") + query, (vector, k)).fetchall()
    return any("Index Scan" in row[0] for row in plan)


def hybrid_vs_hnsw(
    conn: psycopg.Connection, collection: Collection, texts: list[str], vectors: np.ndarray, k: int
) -> dict[str, Any]:
    ef_search = ef_search_for(conn, collection, k)
    conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(ef_search)))
    nearest = nearest_sql(collection)
    force_index(conn, True)
    plan_ok = uses_index(conn, nearest, vectors[0], k)
    counts: dict[str, list[int]] = {"hybrid": [], "hnsw": []}
    samples = interleaved(
        list(range(len(texts))),
        {
            "hybrid": lambda i: conn.execute(
                HYBRID, (collection.name, vectors[i], texts[i], k, None)
            ).fetchall(),
            "hnsw": lambda i: conn.execute(nearest, (vectors[i], k)).fetchall(),
        },
        # Steady state: every query once untimed first. Right after a bulk load the
        # keyword leg's posting pages are cold, and the first figure measured would
        # otherwise pay for warming the cache for all the others.
        warmup=len(texts),
        on_result=lambda name, rows: counts[name].append(len(rows)),
    )
    conn.execute("RESET hnsw.ef_search")
    force_index(conn, False)
    return {
        "ef_search": ef_search,
        "hnsw_uses_index": plan_ok,
        "ms": {name: summary(v) for name, v in samples.items()},
        "mean_results": {name: float(np.mean(c)) for name, c in counts.items()},
    }


def keyword_vs_ts_rank(
    conn: psycopg.Connection, collection: Collection, texts: list[str], k: int
) -> dict[str, Any]:
    """Needs release 0.1.0's engine installed (baseline.install_v010)."""
    tsqueries = [conn.execute(TSQUERY, (ANALYZER, q)).fetchone()[0] for q in texts]  # type: ignore[index]
    results: dict[str, list[Any]] = {"bm25": [], "bm25_v010": []}
    samples = interleaved(
        list(range(len(texts))),
        {
            "bm25": lambda i: conn.execute(KEYWORD, (collection.name, texts[i], k)).fetchall(),
            "bm25_v010": lambda i: conn.execute(
                V010_KEYWORD, (collection.name, texts[i], k, None)
            ).fetchall(),
            "ts_rank_cd": lambda i: conn.execute(
                TS_RANK, {"tsquery": tsqueries[i], "cid": collection.collection_id, "k": k}
            ).fetchall(),
        },
        on_result=lambda name, rows: results[name].append(rows) if name in results else None,
    )
    return {
        "ms": {name: summary(v) for name, v in samples.items()},
        "mean_results": float(np.mean([len(rows) for rows in results["bm25"]])),
        "identical_to_v010": sum(
            same_ranking(ours, base)
            for ours, base in zip(results["bm25"], results["bm25_v010"], strict=True)
        ),
    }


def filtered(
    conn: psycopg.Connection, collection: Collection, texts: list[str], vectors: np.ndarray, k: int
) -> dict[str, Any]:
    """Hybrid TopK with a metadata filter keeping 10 % and 1 % of the chunks."""
    filters = {
        "unfiltered": None,
        "10%": Jsonb({"decile": 0}),
        "1%": Jsonb({"percentile": 0}),
    }
    counts: dict[str, list[int]] = {name: [] for name in filters}

    def runner(f: Jsonb | None) -> Any:
        return lambda i: conn.execute(
            HYBRID, (collection.name, vectors[i], texts[i], k, f)
        ).fetchall()

    samples = interleaved(
        list(range(len(texts))),
        {name: runner(f) for name, f in filters.items()},
        warmup=len(texts),
        on_result=lambda name, rows: counts[name].append(len(rows)),
    )
    result = {
        name: {
            "ms": summary(samples[name]),
            "min_results": int(min(counts[name])),
            "mean_results": float(np.mean(counts[name])),
        }
        for name in filters
    }
    for name, f in filters.items():
        if f is not None:
            result[name]["vector_recall"] = filtered_recall(conn, collection, vectors[:20], k, f)
    return result


def filtered_recall(
    conn: psycopg.Connection, collection: Collection, vectors: np.ndarray, k: int, f: Jsonb
) -> float:
    """Mean share of the exact filtered top k (a sort of every matching chunk) that
    ``hybridsearch.search_vector`` returns with the filter."""
    exact = exact_sql(collection, filtered=True)
    shares = []
    for vector in vectors:
        found = conn.execute(
            "SELECT chunk_id FROM hybridsearch.search_vector(%s, %s, %s, %s)",
            (collection.name, vector, k, f),
        ).fetchall()
        expected = conn.execute(exact, {"v": vector, "f": f, "k": k}).fetchall()
        shares.append(len({r[0] for r in found} & {r[0] for r in expected}) / len(expected))
    return float(np.mean(shares))


def _ids(conn: psycopg.Connection, query: sql.Composed, vector: np.ndarray, k: int) -> list[int]:
    return [r[0] for r in conn.execute(query, (vector, k)).fetchall()]


def _nth(
    conn: psycopg.Connection, query: sql.Composed, vectors: np.ndarray, k: int, i: int
) -> list[int]:
    return _ids(conn, query, vectors[i], k)


def exact_sql(collection: Collection, *, filtered: bool) -> sql.Composed:
    """The exact top %(k)s to %(v)s by a sort of every chunk (that matches %(f)s).

    The distances are computed below a fence, so no index scan can order them: with index
    scans disabled, the planner still took the HNSW index, filtered, at 1M chunks.
    """
    return sql.SQL(
        "SELECT m.chunk_id FROM (SELECT chunk_id,"
        " embedding::vector({dims}) <=> %(v)s::vector({dims}) AS distance"
        " FROM hybridsearch.chunks WHERE collection_id = {id}{condition}"
        " OFFSET 0) AS m ORDER BY m.distance, m.chunk_id LIMIT %(k)s"
    ).format(
        dims=sql.Literal(collection.dimensions),
        id=sql.Literal(collection.collection_id),
        condition=sql.SQL(" AND metadata @> %(f)s" if filtered else ""),
    )


def recall(
    conn: psycopg.Connection,
    collection: Collection,
    vectors: np.ndarray,
    exact: list[set[int]],
    k: int,
    *,
    halfvec: bool,
) -> dict[str, Any]:
    """Recall@10 of the vector (and optionally a halfvec) HNSW index against exact search.

    The HNSW lists come from LIMIT 10 at the ef_search a TopK of ``k`` runs with, the
    same candidate list search_vector reads its first ten from.
    """
    ef = ef_search_for(conn, collection, k)
    result: dict[str, Any] = {"ef_search": ef, "queries": len(vectors)}
    variants = {"vector": nearest_sql(collection)}
    if halfvec:
        started = time.perf_counter()
        conn.execute(
            sql.SQL(
                "CREATE INDEX {} ON {} USING hnsw ((embedding::halfvec({})) halfvec_cosine_ops)"
            ).format(
                sql.Identifier(index_name(collection, "_halfvec_idx")),
                collection.partition,
                sql.Literal(collection.dimensions),
            )
        )
        conn.execute(analyze_sql(collection))
        result["halfvec_build_s"] = time.perf_counter() - started
        variants["halfvec"] = nearest_sql(collection, "halfvec")
    force_index(conn, True)
    for ef_value in sorted({ef, 100, 200}):
        conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(ef_value)))
        for name, query in variants.items():
            result.setdefault(name, {})[f"uses_index_ef{ef_value}"] = uses_index(
                conn, query, vectors[0], 10
            )
            found = [set(_ids(conn, query, v, 10)) for v in vectors]
            hits = [len(f & e) / 10 for f, e in zip(found, exact, strict=True)]
            result.setdefault(name, {})[f"recall@10_ef{ef_value}"] = float(np.mean(hits))
    conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(ef)))
    samples = interleaved(
        list(range(len(vectors))),
        {name: partial(_nth, conn, q, vectors, k) for name, q in variants.items()},
    )
    for name, values in samples.items():
        result[name]["ms"] = summary(values)
    conn.execute("RESET hnsw.ef_search")
    force_index(conn, False)
    if halfvec:
        result["halfvec_index_bytes"] = conn.execute(
            "SELECT pg_relation_size(%s::regclass)",
            ("hybridsearch." + index_name(collection, "_halfvec_idx"),),
        ).fetchone()[0]  # type: ignore[index]
        result["vector_index_bytes"] = conn.execute(
            "SELECT pg_relation_size(%s::regclass)",
            ("hybridsearch." + index_name(collection, "_embedding_idx"),),
        ).fetchone()[0]  # type: ignore[index]
    return result
