"""Migrations on a populated database: up, a no-op up, down to base and up again.

The database is a fresh one next to an application's own data (a 100,000-row table and
its own public.alembic_version). hybridsearch holds 100,000 chunks. Downgrading to base
drops hybridsearch's tables by design, so "data unchanged" means: the application's data
is byte-for-byte the same through the whole cycle, and hybridsearch's own data survives
a re-upgrade to head untouched.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from alembic.script import ScriptDirectory
from psycopg import sql

from hybridsearch import Document
from hybridsearch.collections import Collection
from hybridsearch.db import migrate
from hybridsearch.db.functions import source_files
from hybridsearch.db.store import ingest_documents
from hybridsearch.sync.manage import sync_table
from tests.reliability.conftest import record_figure
from tests.reliability.support import (
    HashEmbedder,
    connect,
    create_database,
    create_test_collection,
    document_text,
    drop_database,
)

APP_ROWS = 100_000
DOCUMENTS, CHUNKS_PER_DOCUMENT = 1_000, 100  # 100,000 chunks
HYBRIDSEARCH_TABLES = (
    "collections",
    "documents",
    "chunks",
    "collection_stats",
    "term_stats",
    "embedding_cache",
    "synced_tables",
    "sync_queue",
    "sync_failures",
)
# The one SECURITY DEFINER function, and why, is in sql/api/sync.sql: the application's
# triggers queue its changed rows without the application's role holding any right on
# schema hybridsearch.
SECURITY_DEFINER = {"sync_enqueue"}
FUNCTION = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+hybridsearch\.(\w+)\s*\(.*?\bAS\s+(\$\w*\$)(.*?)\2",
    re.DOTALL | re.IGNORECASE,
)


@pytest.fixture
def app_url(database_url: str) -> Iterator[str]:
    """A fresh database holding an application's table and its own alembic history."""
    name = f"rel_mig_{uuid.uuid4().hex[:8]}"
    url = create_database(database_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE public.alembic_version (version_num varchar(32) PRIMARY KEY)"
            )
            conn.execute("INSERT INTO public.alembic_version VALUES ('app_rev_42')")
            conn.execute(
                "CREATE TABLE public.app_documents (id bigint PRIMARY KEY, title text NOT NULL,"
                " body jsonb NOT NULL, created date NOT NULL)"
            )
            conn.execute(
                "INSERT INTO public.app_documents"
                " SELECT i, 'title ' || i, jsonb_build_object('n', i, 'tags', ARRAY['a', 'b']),"
                "        DATE '2020-01-01' + (i %% 1000)"
                " FROM generate_series(1, %s) AS i",
                (APP_ROWS,),
            )
        yield url
    finally:
        drop_database(database_url, name)


def _checksum(conn: psycopg.Connection, schema: str, table: str) -> tuple[Any, ...]:
    row = conn.execute(
        sql.SQL(
            "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
            " FROM {} AS t"
        ).format(sql.Identifier(schema, table))
    ).fetchone()
    assert row is not None
    return tuple(row)


def _app_state(url: str) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return {t: _checksum(conn, "public", t) for t in ("app_documents", "alembic_version")}


def _hybridsearch_state(url: str) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return {t: _checksum(conn, "hybridsearch", t) for t in HYBRIDSEARCH_TABLES}


def _bulk_chunks(conn: psycopg.Connection, collection: Collection) -> None:
    """100,000 chunks through SQL in one statement. The partition's HNSW index is
    dropped for the load and recreated from its own definition (building it once is
    ~5x faster than 100,000 inserts into the graph)."""
    name = f"chunks_{collection.collection_id}_embedding_idx"
    index = sql.Identifier("hybridsearch", name)
    with conn.transaction():
        row = conn.execute(
            "SELECT pg_catalog.pg_get_indexdef(%s::regclass)", (f"hybridsearch.{name}",)
        ).fetchone()
        assert row is not None
        conn.execute(sql.SQL("DROP INDEX {}").format(index))
        conn.execute(
            """
            WITH docs AS (
                INSERT INTO hybridsearch.documents
                    (collection_id, external_id, content_hash, chunk_count, metadata)
                SELECT %(c)s, 'bulk-' || d, md5(d::text), %(per)s, jsonb_build_object('d', d)
                FROM generate_series(1, %(docs)s) AS d
                RETURNING document_id
            )
            INSERT INTO hybridsearch.chunks
                (collection_id, document_id, ordinal, content, metadata, embedding, fts)
            SELECT %(c)s, docs.document_id, i, 'bulk chunk ' || i, '{}',
                   ARRAY[sin(docs.document_id * 101 + i), cos(docs.document_id * 7 + i),
                         sin(i), 0.5]::vector,
                   ''::tsvector
            FROM docs, generate_series(0, %(per)s - 1) AS i
            """,
            {"c": collection.collection_id, "docs": DOCUMENTS, "per": CHUNKS_PER_DOCUMENT},
        )
        conn.execute(row[0])


def _newest_function_bodies() -> dict[str, str]:
    """Function name -> body, as the package's current sources (sql/api/, which the head
    revision installs) define it."""
    bodies: dict[str, str] = {}
    for _name, text in source_files():
        for match in FUNCTION.finditer(text):
            bodies[match.group(1)] = match.group(3)
    assert bodies, "no function in the current sources (sql/api/)"
    return bodies


@pytest.mark.slow
def test_up_down_up_on_a_populated_database(app_url: str) -> None:
    app_before = _app_state(app_url)
    assert app_before["app_documents"][0] == APP_ROWS

    migrate.upgrade(app_url)
    assert migrate.current_revision(app_url) == migrate.head_revision()
    assert _app_state(app_url) == app_before

    with connect(app_url) as conn:
        bulk = create_test_collection(conn, "bulk", 4)
        _bulk_chunks(conn, bulk)
        prose = create_test_collection(conn, "prose", 8)
        rng = random.Random(3)
        docs = [Document(f"p{i}", document_text(rng), {"n": i}) for i in range(200)]
        ingest_documents(conn, prose, HashEmbedder(8), docs)
        # the application's table synced into a collection of its own, with failures
        synced = create_test_collection(conn, "synced", 4)
        queued = sync_table(
            conn, synced.name, "public.app_documents", id_column="id",
            text_columns=["title"], metadata_columns=["created"], tenant_column=None,
        )  # fmt: skip
        assert queued == APP_ROWS
        conn.execute(
            "INSERT INTO hybridsearch.sync_failures (sync_id, row_id, tenant_id, error)"
            " SELECT sync_id, '1', '', 'kept for the test' FROM hybridsearch.synced_tables"
        )
    populated = _hybridsearch_state(app_url)
    assert populated["chunks"][0] >= DOCUMENTS * CHUNKS_PER_DOCUMENT
    assert all(populated[t][0] > 0 for t in HYBRIDSEARCH_TABLES)

    # up again: a no-op that leaves every row of both applications alone
    migrate.upgrade(app_url)
    assert migrate.current_revision(app_url) == migrate.head_revision()
    assert _hybridsearch_state(app_url) == populated
    assert _app_state(app_url) == app_before

    migrate.downgrade(app_url, "base")
    assert migrate.current_revision(app_url) is None
    assert _app_state(app_url) == app_before
    with psycopg.connect(app_url) as conn:  # the sync triggers went with the schema
        triggers = conn.execute(
            "SELECT count(*) FROM pg_catalog.pg_trigger"
            " WHERE tgrelid = 'public.app_documents'::regclass"
        ).fetchone()
        assert triggers == (0,)
    with psycopg.connect(app_url) as conn:
        left = conn.execute(
            "SELECT c.relname, c.relkind FROM pg_catalog.pg_class c"
            " WHERE c.relnamespace = 'hybridsearch'::regnamespace ORDER BY 1"
        ).fetchall()
        functions = conn.execute(
            "SELECT count(*) FROM pg_catalog.pg_proc"
            " WHERE pronamespace = 'hybridsearch'::regnamespace"
        ).fetchone()
        types = conn.execute(
            "SELECT count(*) FROM pg_catalog.pg_type WHERE typnamespace = "
            "'hybridsearch'::regnamespace AND typname NOT LIKE '%alembic_version%'"
        ).fetchone()
        vector = conn.execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'vector'")
        assert vector.fetchone() == (1,)  # the application may use pgvector itself
    # only alembic's version table (and its primary key index) remain
    assert {name for name, _ in left} <= {"alembic_version", "alembic_version_pkc"}
    assert functions == (0,)
    assert types == (0,)

    migrate.upgrade(app_url)
    assert migrate.current_revision(app_url) == migrate.head_revision()
    assert _app_state(app_url) == app_before
    restored = _hybridsearch_state(app_url)
    assert all(restored[t][0] == 0 for t in HYBRIDSEARCH_TABLES)  # down to base dropped them
    _assert_functions_match_sql_files(app_url)
    record_figure(
        f"migrations: {populated['chunks'][0]:,} chunks + {APP_ROWS:,} application rows through "
        "up / no-op up / down to base / up; application checksums unchanged"
    )


def test_single_alembic_head() -> None:
    heads = ScriptDirectory.from_config(migrate._config("")).get_heads()
    assert heads == [migrate.head_revision()]


def test_installed_functions_match_newest_sql_files(database_url: str) -> None:
    _assert_functions_match_sql_files(database_url)


def _assert_functions_match_sql_files(url: str) -> None:
    """Every function in schema hybridsearch has exactly the body of its current source in
    sql/api/, nothing more or less is installed, and all but SECURITY_DEFINER are
    SECURITY INVOKER."""
    expected = _newest_function_bodies()
    with psycopg.connect(url) as conn:
        installed = conn.execute(
            "SELECT proname, prosrc, prosecdef FROM pg_catalog.pg_proc"
            " WHERE pronamespace = 'hybridsearch'::regnamespace"
        ).fetchall()
    assert sorted(name for name, _, _ in installed) == sorted(expected)
    for name, body, security_definer in installed:
        assert body == expected[name], f"hybridsearch.{name} differs from sql/"
        assert security_definer is (name in SECURITY_DEFINER), f"hybridsearch.{name}"
