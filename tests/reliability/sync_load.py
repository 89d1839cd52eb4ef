"""An application writing its own synced table while sync workers run, and the check
that the collection then equals the table.

Used by ``test_sync_concurrency.py``, ``test_sync_kill.py`` and ``bench/sync.py``. The
application's connections each own the ids congruent to their index (so they never
deadlock each other) and insert, update (synced columns, other columns, the tenant),
delete and roll back. The expected collection is built here from the table's rows,
independently of the worker: one document per row with text, under the row's tenant,
its text the title and body joined by a blank line, its metadata the tag and n.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

from hybridsearch.collections import Collection
from hybridsearch.db.store import get_collection
from hybridsearch.ingest import Document, content_hash
from hybridsearch.sync import manage
from tests.reliability.support import (
    connect,
    consistency_problems,
    create_test_collection,
    document_text,
    with_application_name,
)

REPO = Path(__file__).resolve().parents[2]

TABLE = "public.items"
COLLECTION = "items"
DIMENSIONS = 8
TENANTS = ("", "acme", "globex")
TAGS = ("red", "green", "blue")

CREATE_TABLE_SQL = """
    CREATE TABLE public.items (
        id bigint PRIMARY KEY, title text NOT NULL, body text, tag text, n integer,
        tenant text NOT NULL DEFAULT '', views integer NOT NULL DEFAULT 0
    )
"""
INSERT_SQL = (
    "INSERT INTO public.items (id, title, body, tag, n, tenant) VALUES (%s, %s, %s, %s, %s, %s)"
)
DRAINED_SQL = """
    SELECT (SELECT count(*) FROM hybridsearch.sync_queue),
           (SELECT count(*) FROM hybridsearch.synced_tables WHERE NOT backfill_done)
"""


def _row(rng: random.Random, row_id: int) -> tuple[Any, ...]:
    return (
        row_id,
        f"item {row_id}",
        document_text(rng, 3),
        rng.choice(TAGS),
        rng.randrange(100),
        rng.choice(TENANTS),
    )


def create_app_table(conn: psycopg.Connection, rows: int, seed: int = 0) -> None:
    """The application's table with ``rows`` rows (ids 0 .. rows-1)."""
    rng = random.Random(seed)
    conn.execute(CREATE_TABLE_SQL)
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(INSERT_SQL, [_row(rng, i) for i in range(rows)])


def declare(conn: psycopg.Connection) -> tuple[Collection, int]:
    """The collection and the sync of the table into it; (collection, rows queued)."""
    collection = create_test_collection(conn, COLLECTION, DIMENSIONS)
    queued = manage.sync_table(
        conn, COLLECTION, TABLE, id_column="id", text_columns=["title", "body"],
        metadata_columns=["tag", "n"], tenant_column="tenant",
    )  # fmt: skip
    return collection, queued


def app_writer(
    url: str,
    index: int,
    connections: int,
    seeded: int,
    new_rows: int,
    seed: int,
    stop: threading.Event | None = None,
) -> Counter[str]:
    """One application connection: inserts its share of ``new_rows`` new ids (after the
    ``seeded`` ones), interleaved with updates, tenant moves, deletes and rollbacks of
    the ids it owns; returns how many of each it committed."""
    rng = random.Random(seed * 1000 + index)
    mine = [i for i in range(seeded) if i % connections == index]
    fresh = [i for i in range(seeded, seeded + new_rows) if i % connections == index]
    done: Counter[str] = Counter()
    with connect(url) as conn:
        while fresh and not (stop is not None and stop.is_set()):
            op = rng.random()
            if op < 0.4:
                batch = fresh[: rng.randint(1, 10)]
                fresh = fresh[len(batch) :]
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(INSERT_SQL, [_row(rng, i) for i in batch])
                mine += batch
                done["inserted"] += len(batch)
            elif op < 0.6 and mine:
                ids = rng.sample(mine, min(len(mine), rng.randint(1, 5)))
                conn.execute(
                    "UPDATE public.items SET body = %s, tag = %s WHERE id = ANY(%s)",
                    (document_text(rng, 3), rng.choice(TAGS), ids),
                )
                done["updated"] += len(ids)
            elif op < 0.7 and mine:
                conn.execute(
                    "UPDATE public.items SET tenant = %s WHERE id = %s",
                    (rng.choice(TENANTS), rng.choice(mine)),
                )
                done["moved"] += 1
            elif op < 0.8 and mine:
                ids = rng.sample(mine, min(len(mine), 3))
                conn.execute("UPDATE public.items SET views = views + 1 WHERE id = ANY(%s)", (ids,))
                done["untouched"] += len(ids)
            elif op < 0.9 and mine:
                ids = rng.sample(mine, min(len(mine), rng.randint(1, 3)))
                conn.execute("DELETE FROM public.items WHERE id = ANY(%s)", (ids,))
                mine = [i for i in mine if i not in ids]
                done["deleted"] += len(ids)
            elif mine:
                with conn.transaction(force_rollback=True):
                    conn.execute(
                        "UPDATE public.items SET title = 'never' WHERE id = %s", (mine[0],)
                    )
                    conn.execute(INSERT_SQL, (-1 - index, "never", None, None, None, ""))
                done["rolled back"] += 1
    return done


def run_app(url: str, connections: int, seeded: int, new_rows: int, seed: int) -> Counter[str]:
    """``connections`` application connections writing at once, until their new rows
    are in; the sum of what they committed."""
    results: list[Counter[str]] = [Counter() for _ in range(connections)]
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = app_writer(url, index, connections, seeded, new_rows, seed)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(results, Counter())


def wait_drained(conn: psycopg.Connection, timeout_s: float) -> bool:
    """Whether the queue emptied (and every backfill finished) within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if conn.execute(DRAINED_SQL).fetchone() == (0, 0):
            return True
        time.sleep(0.1)
    return False


def expected_documents(
    conn: psycopg.Connection, collection: Collection
) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """(tenant, id) → (content hash, metadata) the collection must hold, from the table."""
    expected = {}
    rows = conn.execute("SELECT id::text, title, body, tag, n, tenant FROM public.items")
    for row_id, title, body, tag, n, tenant in rows:
        text = "\n\n".join(t for t in (title, body) if t and t.strip())
        metadata = {"tag": tag, "n": n}
        expected[(tenant, row_id)] = (
            content_hash(Document(row_id, text, metadata), collection),
            metadata,
        )
    return expected


def stored_documents(
    conn: psycopg.Connection, collection: Collection
) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    rows = conn.execute(
        "SELECT tenant_id, external_id, content_hash, metadata FROM hybridsearch.documents"
        " WHERE collection_id = %s",
        (collection.collection_id,),
    )
    return {(tenant, ext): (digest, metadata) for tenant, ext, digest, metadata in rows}


def differences(conn: psycopg.Connection, collection: Collection) -> list[str]:
    """How the collection differs from the table (empty when it equals it): missing,
    extra and stale documents, failed rows and queue entries left."""
    expected = expected_documents(conn, collection)
    stored = stored_documents(conn, collection)
    problems = [f"missing {key}" for key in sorted(expected.keys() - stored.keys())]
    problems += [f"extra {key}" for key in sorted(stored.keys() - expected.keys())]
    problems += [
        f"stale {key}: {stored[key]} instead of {expected[key]}"
        for key in sorted(expected.keys() & stored.keys())
        if stored[key] != expected[key]
    ]
    failed = conn.execute("SELECT row_id, error FROM hybridsearch.sync_failures").fetchall()
    problems += [f"failed row {row_id}: {error}" for row_id, error in failed]
    return problems[:20]


# -- workers killed mid-batch -----------------------------------------------------------

WORKER_APP_NAME = "hybridsearch-sync-worker"
# The worker's backend, and whether it is inside a transaction (a round in progress).
_WORKER_BACKEND_SQL = """
    SELECT pid, xact_start IS NOT NULL FROM pg_catalog.pg_stat_activity
    WHERE application_name = %s AND datname = current_database()
"""


def start_worker(url: str, *args: str) -> subprocess.Popen[str]:
    """``tests.reliability.sync_worker`` as a process of its own."""
    worker_url = with_application_name(url, WORKER_APP_NAME)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.sync_worker", worker_url, *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def kill_mid_batch(conn: psycopg.Connection, url: str, rng: random.Random) -> bool:
    """Start a worker, SIGKILL it while its round's transaction is open (after a random
    part of a second of work), and wait until its backend is gone; whether the kill
    landed inside a transaction."""
    process = start_worker(url, "--batch", "16", "--embed-delay", "0.02")
    try:
        time.sleep(rng.uniform(0.5, 1.5))  # past the start-up, into the rounds
        deadline = time.monotonic() + 30
        in_transaction = False
        while time.monotonic() < deadline and process.poll() is None:
            rows = conn.execute(_WORKER_BACKEND_SQL, (WORKER_APP_NAME,)).fetchall()
            if any(busy for _, busy in rows):
                in_transaction = True
                break
            time.sleep(0.002)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    deadline = time.monotonic() + 30
    while conn.execute(_WORKER_BACKEND_SQL, (WORKER_APP_NAME,)).fetchall():
        assert time.monotonic() < deadline, "the killed worker's backend outlived it by 30 s"
        time.sleep(0.05)
    return in_transaction


def kill_cycles(url: str, kills: int, seed: int = 0) -> dict[str, Any]:
    """The application writes while workers are SIGKILLed ``kills`` times in the middle
    of a batch; then one worker drains the queue. Returns the figures and every way the
    collection differs from the table (none, when nothing was lost or duplicated)."""
    rng = random.Random(seed)
    with connect(url) as conn:
        collection = get_collection(conn, COLLECTION)
        stop = threading.Event()
        seeded = conn.execute("SELECT count(*) FROM public.items").fetchone()
        start = int(seeded[0]) if seeded else 0
        writer = threading.Thread(
            target=app_writer, args=(url, 0, 1, start, 10 * start, seed, stop)
        )
        writer.start()
        try:
            landed = sum(kill_mid_batch(conn, url, rng) for _ in range(kills))
        finally:
            stop.set()
            writer.join()
        queued = conn.execute("SELECT count(*) FROM hybridsearch.sync_queue").fetchone()
        started = time.monotonic()
        final = start_worker(url, "--once")
        out, err = final.communicate(timeout=600)
        assert final.returncode == 0, err
        return {
            "kills": kills,
            "in_transaction": landed,
            "queued_after_kills": queued[0] if queued else 0,
            "drain_s": time.monotonic() - started,
            "drain": out.strip(),
            "differences": differences(conn, collection),
            "consistency": consistency_problems(conn, collection.collection_id),
        }
