"""Migrations: up, down and up again, next to an application's own alembic history."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from hybridsearch.db import migrate


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture
def fresh_url(database_url: str) -> Iterator[str]:
    """An empty database holding only an application's own public.alembic_version."""
    name = f"mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(database_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO public.alembic_version VALUES ('app_rev_42')")
    yield url
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _objects(url: str) -> dict[str, list[str]]:
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = 'hybridsearch'"
            " ORDER BY 1"
        ).fetchall()
        functions = conn.execute(
            "SELECT proname FROM pg_catalog.pg_proc"
            " WHERE pronamespace = 'hybridsearch'::regnamespace"
            " ORDER BY 1"
        ).fetchall()
        app = conn.execute("SELECT version_num FROM public.alembic_version").fetchall()
    return {
        "tables": [t for (t,) in tables],
        "functions": [f for (f,) in functions],
        "app_versions": [v for (v,) in app],
    }


def test_up_down_up_keeps_the_application_history(fresh_url: str) -> None:
    assert migrate.current_revision(fresh_url) is None

    migrate.upgrade(fresh_url)
    assert migrate.current_revision(fresh_url) == migrate.head_revision()
    up = _objects(fresh_url)
    assert {"collections", "documents", "chunks", "alembic_version"} <= set(up["tables"])
    assert {"search_vector", "search_keyword", "search_hybrid", "fuse_candidates"} <= set(
        up["functions"]
    )
    assert up["app_versions"] == ["app_rev_42"]

    with psycopg.connect(fresh_url, autocommit=True) as conn:
        conn.execute("SELECT hybridsearch.create_collection('m', 'model', 3)")

    migrate.downgrade(fresh_url, "base")
    assert migrate.current_revision(fresh_url) is None
    down = _objects(fresh_url)
    assert down["tables"] == ["alembic_version"]  # only alembic's own (empty) table remains
    assert down["functions"] == []
    assert down["app_versions"] == ["app_rev_42"]

    migrate.upgrade(fresh_url)
    again = _objects(fresh_url)
    assert again == up
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (hybridsearch.create_collection('m', 'model', 3)).name"
        ).fetchone()
    assert row == ("m",)


def test_single_head_and_the_package_functions_installed(database_url: str) -> None:
    """The functions in the database are exactly what sql/api defines, nothing more."""
    from alembic.script import ScriptDirectory

    from hybridsearch.db.migrate import _config

    heads = ScriptDirectory.from_config(_config("")).get_heads()
    assert len(heads) == 1
    status = migrate.schema_status(database_url)
    assert status.revision == heads[0]
    assert status.drift is not None and not status.drift, status.problem
    assert status.ready


def _result_columns(url: str, signature: str) -> list[str]:
    """The names of the columns a table function returns, in order."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT array_agg(a.name ORDER BY a.n) FROM pg_catalog.pg_proc AS p,"
            " unnest(p.proargnames, p.proargmodes) WITH ORDINALITY AS a(name, mode, n)"
            " WHERE p.oid = %s::regprocedure AND a.mode = 't'",
            (signature,),
        ).fetchone()
    assert row is not None
    return list(row[0])


LEGS = {
    "hybridsearch.search_vector(text, vector, integer, jsonb)": (
        ["chunk_id", "vector_rank", "vector_distance"],
        ["chunk_id", "document_id", "vector_rank", "vector_distance"],
    ),
    "hybridsearch.search_keyword(text, text, integer, jsonb)": (
        ["chunk_id", "keyword_rank", "keyword_score"],
        ["chunk_id", "document_id", "keyword_rank", "keyword_score"],
    ),
}


def test_revision_0002_changes_the_legs_return_type_both_ways(fresh_url: str) -> None:
    """0002 gives search_vector and search_keyword a document_id column (a return type
    CREATE OR REPLACE cannot change: the revision drops them first), and its downgrade
    puts back 0.1.0's, with its internal vector_topk and keyword_topk gone."""
    migrate.upgrade(fresh_url, "0001")
    for signature, (v001, _) in LEGS.items():
        assert _result_columns(fresh_url, signature) == v001
    migrate.upgrade(fresh_url, "0002")
    for signature, (_, v002) in LEGS.items():
        assert _result_columns(fresh_url, signature) == v002
    assert {"vector_topk", "keyword_topk"} <= set(_objects(fresh_url)["functions"])
    migrate.upgrade(fresh_url, "head")
    status = migrate.schema_status(fresh_url)
    assert status.ready and status.drift is not None and not status.drift, status.problem

    migrate.downgrade(fresh_url, "0001")
    for signature, (v001, _) in LEGS.items():
        assert _result_columns(fresh_url, signature) == v001
    assert not {"vector_topk", "keyword_topk"} & set(_objects(fresh_url)["functions"])
