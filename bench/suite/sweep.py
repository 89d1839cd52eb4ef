"""``bench/hnsw``: HNSW build parameters compared on one set of synthetic chunks.

The chunks are the suite's (bench/suite/data.py), written with the indexes deferred as a
bulk load does; each (m, ef_construction) is then built ``--repeats`` times in turn and
measured by :mod:`suite.hnsw` against exact search over ``--queries`` queries. The first
configuration is the baseline every ratio is taken against (pgvector's defaults, 16:64,
unless told otherwise).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import psycopg
from pgvector.psycopg import register_vector

from hybridsearch.config import Settings
from hybridsearch.db import migrate
from hybridsearch.db.connection import database_url
from hybridsearch.db.store import deferred_indexes, ingest_embedded

from . import data, hnsw, load

COLLECTION = "bench_hnsw"
TOP_K = 50
MAINTENANCE_WORK_MEM = "2GB"


def _configurations(text: str) -> list[tuple[int, int]]:
    pairs = [item.split(":") for item in text.split(",")]
    return [(int(m), int(ef)) for m, ef in pairs]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/hnsw", description=__doc__)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--configs", type=_configurations, default=[(16, 64), (16, 128), (24, 128)])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json", type=Path)
    return parser.parse_args()


def _load(conn: psycopg.Connection, total: int) -> Any:
    collection = load.fresh_collection(conn, COLLECTION)
    done = 0
    with deferred_indexes(conn, collection, maintenance_work_mem=MAINTENANCE_WORK_MEM):
        for batch in data.batches(total):
            ingest_embedded(conn, collection, load.prepared(collection, batch), batch.vectors)
            done += batch.chunks
            if done >= total:
                break
    return collection


def _summary(builds: list[dict[str, Any]]) -> str:
    base = builds[0]
    lines = [
        "| m | ef_construction | build | build s | MiB | calibrated ef | recall@10 at it"
        " | at ef 200 | TopK p50/p95 ms at it | at ef 200 | build vs first |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b in builds:
        ef = b["calibrated_ef_search"]
        c, f = b["ms"]["calibrated"], b["ms"]["fixed"]
        lines.append(
            f"| {b['m']} | {b['ef_construction']} | {b['repeat']} | {b['build_s']:.1f}"
            f" | {b['index_bytes'] / 2**20:.0f} | {ef} | {b['recall@10'][str(ef)]:.3f}"
            f" | {b['recall@10']['200']:.3f} | {c['p50']:.2f}/{c['p95']:.2f}"
            f" | {f['p50']:.2f}/{f['p95']:.2f} | {b['build_s'] / base['build_s']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    url = database_url(Settings.from_env())
    migrate.upgrade(url)
    started = time.perf_counter()
    _, vectors = data.queries(args.queries)
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        print(f"loading {args.chunks:,} chunks", flush=True)
        collection = _load(conn, args.chunks)
        print(f"exact top 10 of {args.queries} queries", flush=True)
        exact = hnsw.exact_lists(conn, collection, vectors)
        result = hnsw.builds(
            conn,
            collection,
            vectors,
            exact,
            TOP_K,
            args.configs,
            args.repeats,
            MAINTENANCE_WORK_MEM,
        )
        conn.execute("SELECT hybridsearch.drop_collection(%s)", (COLLECTION,))
        conn.execute("DROP SCHEMA IF EXISTS hybridsearch_bench CASCADE")
    result["chunks"] = args.chunks
    result["seconds"] = time.perf_counter() - started
    print()
    print(_summary(result["builds"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"\nwrote {args.json}")
