"""Synced tables: what the triggers cost an application's INSERTs, and the worker's
throughput against ``add_documents`` of the same rows; optionally workers SIGKILLed.

    python bench/sync.py                    # 100,000 rows
    python bench/sync.py --rows 5000        # a quick check
    python bench/sync.py --kills 20         # also the long kill mode (tests/reliability: 5)
        [--repeats 3] [--worker-rows N] [--json OUT]

Runs in a database of its own, created on HYBRIDSEARCH_DATABASE_URL's server or the
embedded one, and dropped afterwards.

INSERT: the same rows (a title and a ~500-character body) go into two tables of the
same shape, one synced into a collection and one not, alternately, each figure the
median of ``--repeats`` runs: as one multi-row INSERT per 1,000 rows (a statement
trigger runs once per statement), and as one INSERT statement per row (executemany,
1,000 to a transaction: the trigger runs for every row). Target: synced <= 1.3x plain.

Worker: ``--worker-rows`` of the synced rows (default all) drained by one worker, in
rows per second, against ``ingest_documents`` (add_documents' ingest) of the same
documents into another collection; both embed with the reliability suite's
HashEmbedder, from an empty embedding cache, so the figure is the database's and the
worker's own work. Timings never fail; the exit status is 1 only when a kill cycle lost
or duplicated something.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.reliability

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import psycopg

from hybridsearch.collections import Collection
from hybridsearch.config import Settings
from hybridsearch.db import migrate
from hybridsearch.db.connection import database_url
from hybridsearch.db.store import create_collection, ingest_documents
from hybridsearch.ingest import Document
from hybridsearch.sync import manage, worker
from tests.reliability.support import (
    HASH_MODEL,
    HashEmbedder,
    connect,
    create_database,
    document_text,
    drop_database,
)
from tests.reliability.sync_load import create_app_table, declare, kill_cycles

TABLE_SQL = (
    "CREATE TABLE public.{name} (id bigint PRIMARY KEY, title text NOT NULL, body text,"
    " tag text, created timestamptz NOT NULL DEFAULT now())"
)
MULTI_ROW_SQL = (
    "INSERT INTO public.{name} (id, title, body, tag)"
    " SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[])"
)
ROW_SQL = "INSERT INTO public.{name} (id, title, body, tag) VALUES (%s, %s, %s, %s)"
CHUNK = 1_000
DIMENSIONS = 8


def _collection(conn: psycopg.Connection, name: str) -> Collection:
    """A collection for HashEmbedder vectors with the default chunking (a row's title
    and body make one chunk), as an application's would have."""
    model = f"{HASH_MODEL}-{DIMENSIONS}"
    return create_collection(conn, name, embedding_model=model, dimensions=DIMENSIONS)


def _rows(count: int) -> list[tuple[int, str, str, str]]:
    import random

    rng = random.Random(0)
    return [
        (i, f"row {i}", " ".join(document_text(rng, 5) for _ in range(4))[:500], f"t{i % 7}")
        for i in range(count)
    ]


def _insert(conn: psycopg.Connection, name: str, rows: list[Any], mode: str) -> float:
    """Seconds to insert ``rows`` into ``name`` (emptied first, queue too)."""
    conn.execute(f"TRUNCATE public.{name}")  # constant names, no user input
    conn.execute("DELETE FROM hybridsearch.sync_queue")
    conn.execute("VACUUM public." + name)
    started = time.perf_counter()
    for start in range(0, len(rows), CHUNK):
        part = rows[start : start + CHUNK]
        with conn.transaction(), conn.cursor() as cur:
            if mode == "multi-row":
                cur.execute(
                    MULTI_ROW_SQL.format(name=name), [list(c) for c in zip(*part, strict=True)]
                )
            else:
                cur.executemany(ROW_SQL.format(name=name), part)
    return time.perf_counter() - started


def insert_figures(url: str, rows: list[Any], repeats: int) -> dict[str, Any]:
    with connect(url) as conn:
        for name in ("plain", "synced"):
            conn.execute(TABLE_SQL.format(name=name))
        _collection(conn, "synced")
        manage.sync_table(
            conn, "synced", "public.synced", id_column="id", text_columns=["title", "body"],
            metadata_columns=["tag"], tenant_column=None,
        )  # fmt: skip
        figures: dict[str, Any] = {}
        for mode in ("multi-row", "row-by-row"):
            times: dict[str, list[float]] = {"plain": [], "synced": []}
            for _ in range(repeats):
                for name in ("plain", "synced"):
                    times[name].append(_insert(conn, name, rows, mode))
            plain, synced = (statistics.median(times[n]) for n in ("plain", "synced"))
            queued = conn.execute("SELECT count(*) FROM hybridsearch.sync_queue").fetchone()
            figures[mode] = {
                "plain_s": plain,
                "synced_s": synced,
                "ratio": synced / plain,
                "queued": queued[0] if queued else 0,
            }
            print(
                f"INSERT {len(rows):,} rows {mode:>10}: plain {plain:6.2f} s, synced "
                f"{synced:6.2f} s, ratio {synced / plain:.2f}x (target <= 1.3x)",
                flush=True,
            )
    return figures


def worker_figures(url: str, count: int) -> dict[str, Any]:
    """One worker draining ``count`` queued rows against ingest_documents of the same."""
    with connect(url) as conn:
        # the rows to drain, as one queue entry (as one INSERT statement queues them)
        conn.execute("DELETE FROM hybridsearch.sync_queue")
        conn.execute(
            "INSERT INTO hybridsearch.sync_queue (sync_id, row_ids, tenant_ids, operation)"
            " SELECT s.sync_id, array_agg(t.id::text), array_agg(''::text), 'B'"
            " FROM public.synced AS t, hybridsearch.synced_tables AS s"
            " WHERE t.id < %s GROUP BY s.sync_id",
            (count,),
        )
        rows = conn.execute(
            "SELECT id::text, title, body, tag FROM public.synced WHERE id < %s ORDER BY id",
            (count,),
        ).fetchall()
        conn.execute("DELETE FROM hybridsearch.embedding_cache")
        started = time.perf_counter()
        with worker.connect(url) as wconn, worker.connect(url, listen=False) as cache:
            total = worker.RoundReport()
            for done in worker.rounds(
                wconn, lambda c: HashEmbedder(c.dimensions), once=True, cache=cache
            ):
                total.add(done)
        worker_s = time.perf_counter() - started
        baseline = _collection(conn, "baseline")
        documents = [
            Document(row_id, f"{title}\n\n{body}", {"tag": tag})
            for row_id, title, body, tag in rows
        ]
        conn.execute("DELETE FROM hybridsearch.embedding_cache")
        started = time.perf_counter()
        ingest_documents(conn, baseline, HashEmbedder(DIMENSIONS), documents)
        ingest_s = time.perf_counter() - started
    print(
        f"worker: {total.written:,} rows in {worker_s:.1f} s = {total.written / worker_s:,.0f} "
        f"rows/s; ingest_documents of the same: {len(rows) / ingest_s:,.0f} rows/s; "
        f"ratio {ingest_s / worker_s:.2f} of add_documents' throughput",
        flush=True,
    )
    return {
        "rows": total.written,
        "worker_rows_per_s": total.written / worker_s,
        "ingest_rows_per_s": len(rows) / ingest_s,
        "ratio": ingest_s / worker_s,
    }


def kill_figures(server: str, kills: int) -> dict[str, Any]:
    name = f"bench_sync_kill_{uuid.uuid4().hex[:8]}"
    url = create_database(server, name)
    try:
        migrate.upgrade(url)
        with connect(url) as conn:
            create_app_table(conn, 1_500)
            declare(conn)
        figures = kill_cycles(url, kills)
    finally:
        drop_database(server, name)
    print(
        f"kills: {figures['in_transaction']}/{kills} SIGKILLs inside a round; "
        f"{figures['queued_after_kills']:,} entries came back, drained in "
        f"{figures['drain_s']:.1f} s; differences {figures['differences'] or 'none'}, "
        f"consistency {figures['consistency'] or 'ok'}",
        flush=True,
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--worker-rows", type=int, help="rows the worker drains (all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kills", type=int, default=0, help="SIGKILL cycles (0: none)")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    server = database_url(Settings.from_env())
    name = f"bench_sync_{uuid.uuid4().hex[:8]}"
    url = create_database(server, name)
    figures: dict[str, Any] = {"rows": args.rows}
    try:
        migrate.upgrade(url)
        figures["insert"] = insert_figures(url, _rows(args.rows), args.repeats)
        figures["worker"] = worker_figures(url, args.worker_rows or args.rows)
    finally:
        drop_database(server, name)
    broken = False
    if args.kills:
        figures["kills"] = kills = kill_figures(server, args.kills)
        broken = bool(kills["differences"] or kills["consistency"])
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
