"""Synced application tables: the triggers' queue, the worker, failures, the doors.

Each test has a database of its own (the application's table lives in its ``public``
schema); documents are embedded by the reliability suite's HashEmbedder, except the
CLI test, which runs the real default model end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from hybridsearch import HybridSearch, Settings
from hybridsearch.collections import Collection
from hybridsearch.db import migrate, store
from hybridsearch.errors import CollectionNotFoundError, InvalidInputError
from hybridsearch.ingest import Document, content_hash
from hybridsearch.sync import manage, worker
from tests.reliability.support import (
    HashEmbedder,
    connect,
    consistency_problems,
    create_database,
    create_test_collection,
    drop_database,
)

TABLE = "public.notes"
SYNC_TRIGGERS_SQL = (
    "SELECT count(*) FROM pg_catalog.pg_trigger"
    " WHERE tgfoid = 'hybridsearch.sync_enqueue()'::regprocedure"
)


@pytest.fixture
def db(database_url: str) -> Iterator[str]:
    name = f"sync_{uuid.uuid4().hex[:10]}"
    url = create_database(database_url, name)
    try:
        migrate.upgrade(url)
        with connect(url) as conn:
            conn.execute(
                "CREATE TABLE public.notes (id bigint PRIMARY KEY, title text, body text,"
                " tag text, n numeric, doc jsonb, views integer NOT NULL DEFAULT 0,"
                " tenant text)"
            )
        yield url
    finally:
        drop_database(database_url, name)


@pytest.fixture
def conn(db: str) -> Iterator[psycopg.Connection]:
    with connect(db) as connection:
        yield connection


@pytest.fixture
def collection(conn: psycopg.Connection) -> Collection:
    return create_test_collection(conn, "notes", 8)


def _sync(conn: psycopg.Connection, **columns: Any) -> int:
    spec: dict[str, Any] = {
        "id_column": "id",
        "text_columns": ["title", "body"],
        "metadata_columns": ["tag", "n"],
        "tenant_column": "tenant",
    }
    spec.update(columns)
    return manage.sync_table(conn, "notes", TABLE, **spec)


def _drain(url: str, max_chars: int = 2_000_000) -> worker.RoundReport:
    total = worker.RoundReport()
    with worker.connect(url) as wconn, worker.connect(url, listen=False) as cache:
        for done in worker.rounds(
            wconn,
            lambda c: HashEmbedder(c.dimensions),
            once=True,
            max_document_chars=max_chars,
            cache=cache,
        ):
            total.add(done)
    return total


def _queue(conn: psycopg.Connection) -> list[tuple[str, str, str]]:
    rows = conn.execute(
        "SELECT u.row_id, u.tenant_id, q.operation::text FROM hybridsearch.sync_queue AS q,"
        " unnest(q.row_ids, q.tenant_ids) WITH ORDINALITY AS u(row_id, tenant_id, i)"
        " ORDER BY q.entry_id, u.i"
    ).fetchall()
    return [tuple(row) for row in rows]


def _documents(conn: psycopg.Connection, collection: Collection) -> dict[tuple[str, str], Any]:
    rows = conn.execute(
        "SELECT tenant_id, external_id, content_hash, metadata FROM hybridsearch.documents"
        " WHERE collection_id = %s",
        (collection.collection_id,),
    ).fetchall()
    return {(tenant, ext): (digest, metadata) for tenant, ext, digest, metadata in rows}


def _expected(conn: psycopg.Connection, collection: Collection) -> dict[tuple[str, str], Any]:
    """What the collection must hold: one document per row with text, built here from
    the table (title and body joined by a blank line, tag and n as metadata)."""
    expected = {}
    for row_id, title, body, tag, n, tenant in conn.execute(
        "SELECT id::text, title, body, tag, to_jsonb(n), tenant FROM public.notes"
    ):
        text = "\n\n".join(t for t in (title, body) if t and t.strip())
        if text:
            metadata = {"tag": tag, "n": n}
            digest = content_hash(Document(row_id, text, metadata), collection)
            expected[(tenant or "", row_id)] = (digest, metadata)
    return expected


def test_writes_rollbacks_and_untouched_columns(
    db: str, conn: psycopg.Connection, collection: Collection
) -> None:
    conn.execute(
        "INSERT INTO notes (id, title, body, tag, n, tenant) VALUES (1, 'a', 'b', 'x', 1, 't1')"
    )
    assert _sync(conn) == 1  # the backfill queued the existing row
    assert _queue(conn) == [("1", "t1", "B")]
    with conn.transaction(force_rollback=True):
        conn.execute("INSERT INTO notes (id, title) VALUES (2, 'rolled back')")
        conn.execute("UPDATE notes SET body = 'rolled back' WHERE id = 1")
    conn.execute("UPDATE notes SET views = views + 1")  # not a synced column
    conn.execute("UPDATE notes SET title = title, tag = tag")  # synced, but unchanged
    assert _queue(conn) == [("1", "t1", "B")]
    conn.execute("INSERT INTO notes (id, title, tag, tenant) SELECT i, 'row ' || i, 'y', 't1'"
                 " FROM generate_series(2, 4) AS i")  # fmt: skip
    conn.execute("UPDATE notes SET tenant = 't2' WHERE id = 2")  # moves its document
    conn.execute("UPDATE notes SET id = 30 WHERE id = 3")  # a new id: the old one goes
    conn.execute("DELETE FROM notes WHERE id = 4")
    assert _queue(conn)[1:] == [
        ("2", "t1", "I"), ("3", "t1", "I"), ("4", "t1", "I"),
        ("2", "t2", "U"), ("2", "t1", "U"),
        ("30", "t1", "U"), ("3", "t1", "U"),
        ("4", "t1", "D"),
    ]  # fmt: skip
    report = _drain(db)
    assert (report.failed, _queue(conn)) == (0, [])
    assert _documents(conn, collection) == _expected(conn, collection)
    assert set(_documents(conn, collection)) == {("t1", "1"), ("t2", "2"), ("t1", "30")}
    assert consistency_problems(conn, collection.collection_id) == []
    again = _drain(db)  # nothing queued: nothing written
    assert (again.claimed, again.written) == (0, 0)
    conn.execute("UPDATE notes SET body = 'b' WHERE id = 1")  # the same value: no entry
    conn.execute("UPDATE notes SET tag = 'changed' WHERE id = 1")
    assert _drain(db).written == 1
    assert _documents(conn, collection)[("t1", "1")][1] == {"tag": "changed", "n": 1}


def test_hostile_values_end_as_failures_or_no_document(
    db: str, conn: psycopg.Connection, collection: Collection
) -> None:
    _sync(conn, metadata_columns=["tag", "n", "doc"])
    conn.execute(
        """
        INSERT INTO notes (id, title, body, tag, n, doc, tenant) VALUES
            (1, '', NULL, NULL, NULL, NULL, NULL),          -- no text: no document
            (2, '   ', E'\\n', 'x', 'NaN', '{"a": [1, null]}', ''),
            (3, repeat('x', 10000000), NULL, 'big', 1, NULL, NULL),  -- 10 MB
            (4, 'fine', NULL, 'ok', 'Infinity', '"s"', NULL),
            (5, NULL, NULL, NULL, NULL, NULL, NULL)
        """
    )
    report = _drain(db, max_chars=2_000_000)
    assert _queue(conn) == []  # nothing stuck
    assert report.failed == 1
    status = manage.status(conn)[0]
    assert (status.queued, status.failed) == (0, 1)
    assert [f.row_id for f in status.failures] == ["3"]
    assert "10,000,000 characters" in status.failures[0].error
    stored = _documents(conn, collection)
    assert set(stored) == {("", "4")}
    assert stored[("", "4")][1] == {"tag": "ok", "n": "Infinity", "doc": "s"}
    # the row fixed, its failure goes with its next write; retry queues the rest
    conn.execute("UPDATE notes SET title = 'short now' WHERE id = 3")
    _drain(db)
    assert manage.status(conn)[0].failed == 0
    assert ("", "3") in _documents(conn, collection)
    conn.execute("UPDATE notes SET title = repeat('word ', 30) WHERE id = 4")
    _drain(db, max_chars=100)  # a worker with a lower limit
    assert manage.status(conn)[0].failed == 1
    assert manage.retry(conn, "notes", None) == 1
    assert _queue(conn) == [("4", "", "R")]
    report = _drain(db)
    assert (report.written, report.failed, manage.status(conn)[0].failed) == (1, 0, 0)


def test_text_from_non_text_columns(
    db: str, conn: psycopg.Connection, collection: Collection
) -> None:
    _sync(conn, text_columns=["doc", "n", "title"], metadata_columns=[], tenant_column=None)
    conn.execute("""INSERT INTO notes (id, title, n, doc) VALUES (7, 'seven', 7.50, '{"k": 1}')""")
    _drain(db)
    row = conn.execute(
        "SELECT c.content FROM hybridsearch.chunks c JOIN hybridsearch.documents d"
        " USING (collection_id, document_id) WHERE d.external_id = '7'"
    ).fetchall()
    assert " ".join(r[0] for r in row).split() == ['{"k":', "1}", "7.50", "seven"]


def test_declaring_checks_its_arguments(conn: psycopg.Connection, collection: Collection) -> None:
    conn.execute("CREATE TABLE public.loose (k text, v text, f float8 UNIQUE)")
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"table": "public.nope"}, InvalidInputError, "does not exist"),
        ({"table": "public.loose", "id_column": "k"}, InvalidInputError, "not unique"),
        ({"table": "public.loose", "id_column": "f"}, InvalidInputError, "double precision"),
        ({"text_columns": ["title", "nope"]}, InvalidInputError, "no column 'nope'"),
        ({"tenant_column": "gone"}, InvalidInputError, "no column 'gone'"),
        ({"text_columns": "title"}, InvalidInputError, "list of column names"),
        ({"text_columns": []}, InvalidInputError, "at least one"),
        ({"collection": "missing"}, CollectionNotFoundError, "missing"),
        ({"table": "hybridsearch.documents", "id_column": "external_id"}, InvalidInputError,
         "hybridsearch itself"),
    ]  # fmt: skip
    for changes, error, message in cases:
        args: dict[str, Any] = {
            "collection": "notes",
            "table": TABLE,
            "id_column": "id",
            "text_columns": ["title"],
            "metadata_columns": [],
            "tenant_column": None,
        }
        args.update(changes)
        with pytest.raises(error, match=message):
            texts, metadata = manage.checked_columns(
                args.pop("text_columns"), args.pop("metadata_columns")
            )
            manage.sync_table(
                conn, args.pop("collection"), args.pop("table"), text_columns=texts,
                metadata_columns=metadata, **args,
            )  # fmt: skip
        # nothing was declared, no trigger created
        assert conn.execute("SELECT count(*) FROM hybridsearch.synced_tables").fetchone() == (0,)
    assert conn.execute(SYNC_TRIGGERS_SQL).fetchone() == (0,)


def test_unsync_removes_triggers_and_queue_and_keeps_documents(
    db: str, conn: psycopg.Connection, collection: Collection
) -> None:
    conn.execute("INSERT INTO notes (id, title) VALUES (1, 'one'), (2, 'two')")
    _sync(conn)
    _drain(db)
    conn.execute("INSERT INTO notes (id, title) VALUES (3, 'three')")
    assert manage.unsync_table(conn, "notes", TABLE) is True
    assert manage.unsync_table(conn, "notes", TABLE) is False  # already gone
    assert _queue(conn) == []
    assert conn.execute(SYNC_TRIGGERS_SQL).fetchone() == (0,)
    assert set(_documents(conn, collection)) == {("", "1"), ("", "2")}
    conn.execute("INSERT INTO notes (id, title) VALUES (4, 'four')")
    assert _queue(conn) == []


def test_a_collection_with_a_synced_table_cannot_be_dropped(
    conn: psycopg.Connection, collection: Collection
) -> None:
    _sync(conn)
    with pytest.raises(psycopg.errors.ObjectInUse, match="sync remove --collection notes"):
        conn.execute("SELECT hybridsearch.drop_collection('notes')")
    with pytest.raises(InvalidInputError, match=r"kept in step with table public\.notes"):
        store.drop_collection(conn, "notes")
    assert store.get_collection(conn, "notes") == collection
    assert manage.unsync_table(conn, "notes", TABLE) is True
    assert conn.execute("SELECT hybridsearch.drop_collection('notes')").fetchone() == (True,)


def test_an_application_role_without_rights_on_hybridsearch_writes_its_table(
    db: str, conn: psycopg.Connection, collection: Collection
) -> None:
    role = f"app_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON public.notes TO {role}")
        _sync(conn)
        conn.execute(f"REVOKE ALL ON SCHEMA hybridsearch FROM {role}, PUBLIC")
        with connect(db) as app:
            app.execute(f"SET ROLE {role}")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute("SELECT count(*) FROM hybridsearch.sync_queue")
            app.execute("INSERT INTO notes (id, title, tenant) VALUES (1, 'app row', 'a')")
            app.execute("UPDATE notes SET body = 'more' WHERE id = 1")
            app.execute("DELETE FROM notes WHERE id = 1")
        assert [op for _, _, op in _queue(conn)] == ["I", "U", "D"]
    finally:
        conn.execute("GRANT USAGE ON SCHEMA hybridsearch TO PUBLIC")
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


def test_backfill_goes_in_batches_and_survives_redeclaring(
    db: str, conn: psycopg.Connection, collection: Collection
) -> None:
    conn.execute("INSERT INTO notes (id, title) SELECT i, 'r' || i FROM generate_series(1, 2500) i")
    sync_id = conn.execute(
        "SELECT hybridsearch.sync_table('notes', 'public.notes', 'id', ARRAY['title'])"
    ).fetchone()[0]  # type: ignore[index]
    batches = [
        conn.execute("SELECT hybridsearch.sync_backfill(%s, 1000)", (sync_id,)).fetchone()[0]  # type: ignore[index]
        for _ in range(4)
    ]
    assert batches == [1000, 1000, 500, 0]
    # the same columns again: nothing queued twice; other columns: every row again
    assert _sync(conn, text_columns=["title"], metadata_columns=[], tenant_column=None) == 0
    assert (
        _sync(conn, text_columns=["title", "body"], metadata_columns=[], tenant_column=None) == 2500
    )
    report = _drain(db)  # queued by both declarations: written once, then unchanged
    assert (report.written, report.unchanged) == (2500, 2500)
    assert conn.execute("SELECT count(*) FROM hybridsearch.sync_queue").fetchone() == (0,)


def test_the_worker_backfills_when_sql_declared_the_table(
    db: str, conn: psycopg.Connection, collection: Collection
) -> None:
    conn.execute("INSERT INTO notes (id, title) SELECT i, 'r' || i FROM generate_series(1, 1500) i")
    conn.execute("SELECT hybridsearch.sync_table('notes', 'public.notes', 'id', ARRAY['title'])")
    assert _queue(conn) == []
    report = _drain(db)
    assert (report.backfilled, report.written) == (1500, 1500)
    status = manage.status(conn)[0]
    assert (status.backfill_done, status.queued, status.problem) == (True, 0, None)


def test_status_names_what_went_wrong(
    db: str, conn: psycopg.Connection, collection: Collection
) -> None:
    _sync(conn)
    conn.execute("INSERT INTO notes (id, title) VALUES (1, 'x')")
    status = manage.status(conn)[0]
    assert (status.table, status.collection, status.queued) == (TABLE, "notes", 1)
    assert status.lag_s is not None and status.lag_s >= 0
    conn.execute("ALTER TABLE notes RENAME COLUMN tag TO label")
    assert manage.status(conn)[0].problem == "columns no longer in the table: tag"
    conn.execute("DROP TABLE notes")
    assert manage.status(conn)[0].problem == "the table no longer exists"
    report = _drain(db)  # its queued row is recorded as failed, not stuck
    assert (report.failed, _queue(conn)) == (1, [])


def test_cli_with_the_default_model(db: str, conn: psycopg.Connection, settings: Settings) -> None:
    """`hybridsearch sync add | run --once | status --json | remove`, end to end with the
    real default embedding model, then a search finds the synced row."""
    env = {**os.environ, "HYBRIDSEARCH_DATABASE_URL": db, "HYBRIDSEARCH_TORCH_THREADS": "1"}

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "hybridsearch.cli", *args],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    cli("collections", "create", "notes")
    conn.execute(
        "INSERT INTO notes (id, title, body, tag) VALUES"
        " (1, 'Sourdough', 'A starter of flour and water leavens bread.', 'food'),"
        " (2, 'Autovacuum', 'Vacuum removes dead tuples in PostgreSQL.', 'db')"
    )
    out = cli("sync", "add", "--collection", "notes", "--table", TABLE, "--id-column", "id",
              "--text-columns", "title,body", "--metadata-columns", "tag")  # fmt: skip
    assert "2 existing rows queued" in out
    conn.execute("UPDATE notes SET body = 'Cats purr when content.' WHERE id = 2")
    assert "2 written" in cli("sync", "run", "--once").splitlines()[-1]
    (status,) = json.loads(cli("sync", "status", "--json"))
    assert (status["table"], status["queued"], status["failed"]) == (TABLE, 0, 0)
    with HybridSearch(Settings(database_url=db, data_dir=settings.data_dir)) as hs:
        hits = hs.search("notes", "purring cats", top_n=1, rerank=False).results
        assert (hits[0].document_id, hits[0].metadata) == ("2", {"tag": "db"})
        assert hs.unsync_table("notes", TABLE) is True
    assert "was not synced" in cli("sync", "remove", "--collection", "notes", "--table", TABLE)


def test_the_async_client(db: str, conn: psycopg.Connection, settings: Settings) -> None:
    """The asyncio door runs the same steps: declare, write, status, retry, remove."""
    import asyncio

    from hybridsearch import AsyncHybridSearch

    conn.execute("INSERT INTO notes (id, title, tag) VALUES (1, 'Sourdough bread', 'food')")

    async def main() -> None:
        config = Settings(database_url=db, data_dir=settings.data_dir, torch_threads=1)
        async with await AsyncHybridSearch.open(config) as hs:
            await hs.create_collection("notes")
            queued = await hs.sync_table(
                "notes", TABLE, id_column="id", text_columns=["title"], metadata_columns=["tag"]
            )
            assert queued == 1
            conn.execute("INSERT INTO notes (id, title) VALUES (2, 'Cats purr')")
            rounds: list[worker.RoundReport] = []
            report = await hs.sync_run(on_round=rounds.append)
            assert (report.written, report.failed) == (2, 0)
            assert sum(r.written for r in rounds) == 2
            (status,) = await hs.sync_status()
            assert (status.queued, status.failed, status.backfill_done) == (0, 0, True)
            assert await hs.sync_retry("notes") == 0
            assert await hs.unsync_table("notes", TABLE) is True

    asyncio.run(main())


def test_the_cli_worker_waits_for_changes_and_exits_cleanly_on_sigterm(
    db: str, conn: psycopg.Connection, collection: Collection
) -> None:
    """`hybridsearch sync run` without --once: it writes what the triggers queue (woken
    by their notification), and SIGTERM ends it with status 0."""
    import signal
    import time

    _sync(conn, metadata_columns=[], tenant_column=None)
    env = {**os.environ, "HYBRIDSEARCH_DATABASE_URL": db}
    process = subprocess.Popen(
        [sys.executable, "-m", "hybridsearch.cli", "sync", "run", "--poll-interval", "600"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        # The collection's model is the test's hash "model", which the worker cannot
        # load: each row is recorded as failed, which shows that the worker took it.
        for failed, row in enumerate(("first", "second"), start=1):
            conn.execute("INSERT INTO notes (id, title) VALUES (%s, %s)", (failed, row))
            # the second only by the triggers' notification: the poll interval is 600 s
            while manage.status(conn)[0].failed != failed:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert out.splitlines()[-1] == "sync: 0 written, 0 unchanged, 0 deleted, 2 failed (stopped)"
    assert "reliability-hash" in manage.status(conn)[0].failures[0].error
