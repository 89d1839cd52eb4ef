"""HNSW builds: recall@10 against exact search, build time, size and latency, per build.

A parallel HNSW build is not deterministic, so one build's recall says little about the
next one's. Each build here drops the collection's HNSW index and builds it again with
``hybridsearch.rebuild_vector_index`` under the given (m, ef_construction), which also
calibrates the ef_search its searches walk with (``hybridsearch.calibrate_ef_search``,
50 of the collection's own chunks as queries). Then, over the suite's queries (sampled
from the same distribution as the chunks, not chunks themselves):

* recall@10 of a bare HNSW query (LIMIT 10) against exact search, at ef_search 100, at
  200 (what vector_topk walked with before calibration) and at the calibrated value;
* bare HNSW TopK latency at the ef_search vector_topk walks with after calibration
  (``max(calibrated, K)``) and at ``max(200, K)``, interleaved on the same build;
* the build's time (the rebuild less a second, identical calibration, timed alone), the
  calibration's time, and the index's size.

The exact lists are computed once, by a sort of every chunk (``search.exact_sql``).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from hybridsearch.collections import Collection
from hybridsearch.params import HNSW_EF_SEARCH

from .load import index_name
from .search import exact_sql, force_index, nearest_sql
from .timing import interleaved, summary

RECALL_AT = 10
#: ef_search values whose recall every build reports, besides its calibrated one
FIXED_EF = (100, HNSW_EF_SEARCH.default)


def exact_lists(
    conn: psycopg.Connection, collection: Collection, vectors: np.ndarray
) -> list[set[int]]:
    query = exact_sql(collection, filtered=False)
    return [
        {r[0] for r in conn.execute(query, {"v": v, "k": RECALL_AT}).fetchall()} for v in vectors
    ]


def _set_ef(conn: psycopg.Connection, ef_search: int) -> None:
    conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(ef_search)))


def _ids(conn: psycopg.Connection, query: sql.Composed, vector: np.ndarray, k: int) -> list[int]:
    return [r[0] for r in conn.execute(query, (vector, k)).fetchall()]


def _recall(
    conn: psycopg.Connection, query: sql.Composed, vectors: np.ndarray, exact: list[set[int]]
) -> float:
    found = [set(_ids(conn, query, v, RECALL_AT)) for v in vectors]
    return float(np.mean([len(f & e) / RECALL_AT for f, e in zip(found, exact, strict=True)]))


def rebuild(
    conn: psycopg.Connection,
    collection: Collection,
    m: int,
    ef_construction: int,
    maintenance_work_mem: str,
) -> dict[str, Any]:
    """Build the collection's HNSW index again with (m, ef_construction): the times, the
    calibrated ef_search and the index's size."""
    conn.execute(
        "UPDATE hybridsearch.collections SET settings = settings || %s WHERE name = %s",
        (Jsonb({"hnsw_m": m, "hnsw_ef_construction": ef_construction}), collection.name),
    )
    started = time.perf_counter()
    with conn.transaction():
        conn.execute("SELECT set_config('maintenance_work_mem', %s, true)", (maintenance_work_mem,))
        row = conn.execute("SELECT hybridsearch.rebuild_vector_index(%s)", (collection.name,))
        ef_search = int(row.fetchone()[0])  # type: ignore[index]
    rebuild_s = time.perf_counter() - started
    started = time.perf_counter()
    steps = conn.execute(
        "SELECT ef_search, recall FROM hybridsearch.calibrate_ef_search(%s, p_queries => 50)",
        (collection.name,),
    ).fetchall()
    calibration_s = time.perf_counter() - started
    assert steps[-1][0] == ef_search, "the same calibration kept another ef_search"
    size = conn.execute(
        "SELECT pg_relation_size(%s::regclass)",
        ("hybridsearch." + index_name(collection, "_embedding_idx"),),
    ).fetchone()
    return {
        "m": m,
        "ef_construction": ef_construction,
        "build_s": rebuild_s - calibration_s,
        "calibration_s": calibration_s,
        "calibrated_ef_search": ef_search,
        "calibration_recall": steps[-1][1],
        "index_bytes": int(size[0]),  # type: ignore[index]
    }


def measure_build(
    conn: psycopg.Connection,
    collection: Collection,
    vectors: np.ndarray,
    exact: list[set[int]],
    k: int,
    built: dict[str, Any],
) -> dict[str, Any]:
    """Recall at the fixed and calibrated ef_search, and TopK latency at both walks."""
    query = nearest_sql(collection)
    force_index(conn, True)
    recall: dict[str, float] = {}
    for ef in sorted({*FIXED_EF, built["calibrated_ef_search"]}):
        _set_ef(conn, ef)
        recall[str(ef)] = _recall(conn, query, vectors, exact)
    walks = {
        "calibrated": max(built["calibrated_ef_search"], k),
        "fixed": max(HNSW_EF_SEARCH.default, k),
    }

    def topk(ef: int, i: int) -> list[int]:
        _set_ef(conn, ef)
        return _ids(conn, query, vectors[i], k)

    samples = interleaved(
        list(range(len(vectors))), {name: partial(topk, ef) for name, ef in walks.items()}
    )
    conn.execute("RESET hnsw.ef_search")
    force_index(conn, False)
    return {
        **built,
        "recall@10": recall,
        "ef_search": walks,
        "ms": {name: summary(values) for name, values in samples.items()},
    }


def builds(
    conn: psycopg.Connection,
    collection: Collection,
    vectors: np.ndarray,
    exact: list[set[int]],
    k: int,
    configurations: list[tuple[int, int]],
    repeats: int,
    maintenance_work_mem: str,
) -> dict[str, Any]:
    """Every configuration built ``repeats`` times, in turn (a, b, a, b, ...), measured;
    ``exact`` holds each vector's exact top 10 (:func:`exact_lists`)."""
    result: dict[str, Any] = {"queries": len(vectors), "builds": []}
    for repeat in range(repeats):
        for m, ef_construction in configurations:
            built = rebuild(conn, collection, m, ef_construction, maintenance_work_mem)
            figures = measure_build(conn, collection, vectors, exact, k, built)
            figures["repeat"] = repeat + 1
            print(format_build(figures), flush=True)
            result["builds"].append(figures)
    return result


def format_build(b: dict[str, Any]) -> str:
    recalls = ", ".join(f"ef {ef}: {r:.3f}" for ef, r in b["recall@10"].items())
    ms = b["ms"]
    return (
        f"  m {b['m']}, ef_construction {b['ef_construction']} (build {b['repeat']}):"
        f" build {b['build_s']:.1f}s + calibration {b['calibration_s']:.1f}s,"
        f" {b['index_bytes'] / 2**20:.0f} MiB, calibrated ef_search"
        f" {b['calibrated_ef_search']}; recall@10 {recalls}; TopK p50/p95"
        f" {ms['calibrated']['p50']:.2f}/{ms['calibrated']['p95']:.2f} ms at ef"
        f" {b['ef_search']['calibrated']},"
        f" {ms['fixed']['p50']:.2f}/{ms['fixed']['p95']:.2f} ms at ef {b['ef_search']['fixed']}"
    )
