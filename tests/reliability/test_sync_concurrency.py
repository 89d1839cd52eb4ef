"""A synced table under concurrent application writes and two sync workers.

10,000 application rows (4,000 there when the table is synced, 6,000 inserted after);
4 application connections insert, update (synced and other columns, tenants), delete
and roll back at once while 2 workers run. Once the queue drains, the collection must
equal the table exactly: ids, content hashes, metadata and tenants, with every
document's chunks whole and the BM25 statistics exact.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from hybridsearch.db import migrate
from hybridsearch.sync import worker
from tests.reliability.conftest import record_figure
from tests.reliability.support import (
    HashEmbedder,
    connect,
    consistency_problems,
    create_database,
    drop_database,
)
from tests.reliability.sync_load import (
    create_app_table,
    declare,
    differences,
    run_app,
    wait_drained,
)

SEEDED, NEW_ROWS = 4_000, 6_000
APP_CONNECTIONS, WORKERS = 4, 2


@pytest.fixture
def url(database_url: str) -> Iterator[str]:
    name = f"rel_sync_{uuid.uuid4().hex[:8]}"
    url = create_database(database_url, name)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        drop_database(database_url, name)


def _worker(url: str, stop: threading.Event, totals: list[worker.RoundReport]) -> None:
    total = worker.RoundReport()
    totals.append(total)
    with worker.connect(url) as conn, worker.connect(url, listen=False) as cache:
        for done in worker.rounds(
            conn, lambda c: HashEmbedder(c.dimensions), poll_interval_s=0.2, stop=stop, cache=cache
        ):
            total.add(done)


@pytest.mark.slow
def test_concurrent_application_writes_and_two_workers(url: str) -> None:
    with connect(url) as conn:
        create_app_table(conn, SEEDED)
        collection, queued = declare(conn)
    assert queued == SEEDED
    stop = threading.Event()
    totals: list[worker.RoundReport] = []
    workers = [threading.Thread(target=_worker, args=(url, stop, totals)) for _ in range(WORKERS)]
    started = time.monotonic()
    for thread in workers:
        thread.start()
    try:
        committed = run_app(url, APP_CONNECTIONS, SEEDED, NEW_ROWS, seed=1)
        written_by = time.monotonic()
        with connect(url) as conn:
            assert wait_drained(conn, timeout_s=120), "the queue did not drain in 120 s"
    finally:
        stop.set()
        for thread in workers:
            thread.join(timeout=30)
    drained = time.monotonic()
    assert committed["inserted"] == NEW_ROWS
    assert all(not t.is_alive() for t in workers)
    assert len(totals) == WORKERS and all(t.written > 0 for t in totals)  # both worked
    with connect(url) as conn:
        assert differences(conn, collection) == []
        assert consistency_problems(conn, collection.collection_id) == []
        rows = conn.execute("SELECT count(*) FROM public.items").fetchone()
    written = sum(t.written for t in totals)
    record_figure(
        f"sync: {rows[0] if rows else 0:,} rows in the table after {dict(committed)} from "
        f"{APP_CONNECTIONS} connections; {WORKERS} workers wrote {written:,} documents and "
        f"deleted {sum(t.deleted for t in totals):,} ({sum(t.retried for t in totals)} rounds "
        "retried after a deadlock); the app wrote for "
        f"{written_by - started:.1f} s, the queue drained {drained - written_by:.1f} s later"
    )
