"""Statement timeouts, a saturated pool, and no connection leaks after 1,000 cancellations.

Searches are made slow deterministically: another transaction holds an ACCESS EXCLUSIVE
lock on the collection's chunk partition, so a search waits on that lock until its
statement timeout (or a cancel) ends it. No timing guesswork, no pg_sleep in the product.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg_pool
import pytest
from psycopg import sql

from hybridsearch import Document, HybridSearch, QueryTimeoutError, Settings
from hybridsearch.collections import Collection
from hybridsearch.db.connection import open_pool
from hybridsearch.db.store import drop_collection, fetch_candidates, ingest_documents
from hybridsearch.search_input import SearchOptions
from tests.reliability.conftest import record_figure
from tests.reliability.support import (
    HashEmbedder,
    connect,
    create_test_collection,
    with_application_name,
)

CANCELLATIONS = 1000
POOL_MAX = 4  # hybridsearch.db.connection.open_pool's default


@pytest.fixture(scope="module")
def slow_collection(database_url: str) -> Iterator[Collection]:
    """A small collection whose searches touch its chunk partition."""
    with connect(database_url) as conn:
        collection = create_test_collection(conn, f"slow_{uuid.uuid4().hex[:8]}", 8)
        docs = [Document(f"d{i}", f"postgres keeps chunk {i} safe.") for i in range(20)]
        ingest_documents(conn, collection, HashEmbedder(8), docs)
        yield collection
        drop_collection(conn, collection.name)


@contextmanager
def partition_locked(url: str, collection: Collection) -> Iterator[None]:
    """Hold an ACCESS EXCLUSIVE lock on the collection's partition until the block ends."""
    with psycopg.connect(url) as conn:
        conn.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                sql.Identifier("hybridsearch", f"chunks_{collection.collection_id}")
            )
        )
        try:
            yield
        finally:
            conn.rollback()


def _backends(url: str, application: str) -> list[tuple[int, str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, state FROM pg_catalog.pg_stat_activity WHERE application_name = %s",
            (application,),
        ).fetchall()
    return [(pid, state) for pid, state in rows]


def _options(query: str = "postgres") -> SearchOptions:
    return SearchOptions(
        query=query,
        top_k=10,
        top_n=3,
        mode="keyword",
        filter=None,
        fusion="rrf",
        rrf_k=60,
        vector_weight=1.0,
        keyword_weight=1.0,
    )


def test_statement_timeout_raises_and_the_connection_stays_usable(
    database_url: str, slow_collection: Collection
) -> None:
    """On one connection: QueryTimeoutError, then the same connection is idle, keeps the
    server's default timeout (the search set it per transaction) and answers."""
    with connect(database_url) as conn:
        default = conn.execute("SHOW statement_timeout").fetchone()
        pid = conn.info.backend_pid
        with partition_locked(database_url, slow_collection):
            started = time.perf_counter()
            with pytest.raises(QueryTimeoutError, match="statement timeout"):
                fetch_candidates(conn, slow_collection, _options(), None, statement_timeout_ms=200)
            elapsed = time.perf_counter() - started
        assert 0.2 <= elapsed < 5
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.info.backend_pid == pid
        assert conn.execute("SHOW statement_timeout").fetchone() == default
        hits = fetch_candidates(conn, slow_collection, _options(), None, statement_timeout_ms=200)
        assert hits


def test_service_statement_timeout(database_url: str, slow_collection: Collection) -> None:
    """Through the service: the timed-out search's pooled connection is kept and reused."""
    application = f"hs-rel-timeout-{uuid.uuid4().hex[:8]}"
    url = with_application_name(database_url, application)
    with HybridSearch(Settings(database_url=url, statement_timeout_ms=200)) as hs:
        before = _backends(database_url, application)
        with partition_locked(database_url, slow_collection), pytest.raises(QueryTimeoutError):
            hs.search(slow_collection.name, "postgres", mode="keyword", rerank=False)
        result = hs.search(slow_collection.name, "postgres", mode="keyword", rerank=False)
        assert result.results
        after = _backends(database_url, application)
    assert [pid for pid, _ in after] == [pid for pid, _ in before]  # same single connection
    assert all(state == "idle" for _, state in after)


def test_open_pool_gives_up_within_its_timeout(database_url: str) -> None:
    """All connections checked out: the next request fails after the pool timeout, and the
    pool serves again once a connection comes back."""
    with open_pool(database_url, max_size=2, timeout_s=0.5) as pool:
        held = [pool.getconn() for _ in range(2)]
        started = time.perf_counter()
        with pytest.raises(psycopg_pool.PoolTimeout), pool.connection():
            pass
        assert 0.4 <= time.perf_counter() - started < 3
        pool.putconn(held.pop())
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        pool.putconn(held.pop())


def test_saturated_service_pool_raises_a_hybridsearch_error(
    database_url: str, slow_collection: Collection
) -> None:
    from hybridsearch import DatabaseError

    settings = Settings(database_url=database_url, pool_size=2, pool_timeout_ms=500)
    with HybridSearch(settings) as hs:
        held = [hs._pool.getconn() for _ in range(2)]
        try:
            started = time.perf_counter()
            with pytest.raises(DatabaseError, match="pool"):
                hs.search(slow_collection.name, "postgres", mode="keyword", rerank=False)
            assert time.perf_counter() - started < 3
        finally:
            for conn in held:
                hs._pool.putconn(conn)


@pytest.mark.slow
def test_no_connection_leaks_after_1000_cancellations(
    database_url: str, slow_collection: Collection
) -> None:
    """500 searches end by statement timeout and 500 by pg_cancel_backend while blocked;
    afterwards each client holds at most its pool, nothing is left in a transaction, and
    closing the clients leaves no backend behind."""
    application = f"hs-rel-leak-{uuid.uuid4().hex[:8]}"
    url = with_application_name(database_url, application)
    errors: list[str] = []
    observed = {"timeout": 0, "cancel": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def search_until_stopped(hs: HybridSearch, kind: str, target: int) -> None:
        while not stop.is_set():
            with lock:
                if observed[kind] >= target:
                    return
            try:
                hs.search(slow_collection.name, "postgres", mode="keyword", rerank=False)
                errors.append(f"{kind}: a search finished while the partition was locked")
            except QueryTimeoutError:
                with lock:
                    observed[kind] += 1
            except Exception as exc:
                errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                return

    timeout_client = HybridSearch(Settings(database_url=url, statement_timeout_ms=20))
    cancel_client = HybridSearch(Settings(database_url=url, statement_timeout_ms=60_000))
    cancelled_statements: set[tuple[int, object]] = set()
    started = time.perf_counter()
    try:
        with partition_locked(database_url, slow_collection):
            threads = [
                threading.Thread(target=search_until_stopped, args=(timeout_client, "timeout", 500))
                for _ in range(POOL_MAX)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=300)

            threads = [
                threading.Thread(target=search_until_stopped, args=(cancel_client, "cancel", 500))
                for _ in range(POOL_MAX)
            ]
            for thread in threads:
                thread.start()
            with psycopg.connect(database_url, autocommit=True) as admin:
                deadline = time.perf_counter() + 300
                while any(t.is_alive() for t in threads) and time.perf_counter() < deadline:
                    # Cancel only statements waiting on our lock, each once: a second
                    # cancel could hit the same backend's next statement.
                    waiting = admin.execute(
                        "SELECT pid, query_start FROM pg_catalog.pg_stat_activity"
                        " WHERE application_name = %s AND wait_event_type = 'Lock'",
                        (application,),
                    ).fetchall()
                    for pid, query_start in waiting:
                        if (pid, query_start) not in cancelled_statements:
                            cancelled_statements.add((pid, query_start))
                            admin.execute("SELECT pg_catalog.pg_cancel_backend(%s)", (pid,))
                    time.sleep(0.002)
            stop.set()
            for thread in threads:
                thread.join(timeout=10)
        during = _backends(database_url, application)
        # both clients still answer
        for hs in (timeout_client, cancel_client):
            assert hs.search(slow_collection.name, "postgres", mode="keyword").results
    finally:
        stop.set()
        timeout_client.close()
        cancel_client.close()
    elapsed = time.perf_counter() - started
    leaked: list[tuple[int, str]] = []
    for _ in range(100):  # backends exit asynchronously after the client disconnects
        leaked = _backends(database_url, application)
        if not leaked:
            break
        time.sleep(0.1)
    record_figure(
        f"cancellations: {observed['timeout']} statement timeouts + {observed['cancel']} "
        f"pg_cancel_backend in {elapsed:.1f}s; backends while open {len(during)} "
        f"(max {2 * POOL_MAX}), leaked after close {len(leaked)}"
    )
    assert errors == []
    assert observed["timeout"] + observed["cancel"] >= CANCELLATIONS
    assert observed["cancel"] == len(cancelled_statements)  # every cancel surfaced once
    assert len(during) <= 2 * POOL_MAX
    assert all(state == "idle" for _, state in during)
    assert leaked == []
