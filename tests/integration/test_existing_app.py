"""The example in examples/existing_app: an application with its own alembic history adds
hybridsearch to its database, syncs its table (its own writes keep the collection right)
and joins search results back to its rows."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, event, inspect, select, text
from sqlalchemy.orm import Session

from hybridsearch import HybridSearch, Settings
from hybridsearch.db import migrate, tables
from tests.integration.test_migrations import _with_database

APP = Path(__file__).resolve().parents[2] / "examples" / "existing_app"

ARTICLES = [
    ("Tuning PostgreSQL autovacuum", "Autovacuum removes dead tuples; tune its cost limit.", "db"),
    ("Sourdough at home", "A starter of flour and water leavens bread overnight.", "food"),
    ("Cats and their purring", "Domestic cats purr when content and sometimes when hurt.", "pets"),
    ("Indexing text in PostgreSQL", "GIN indexes on tsvector make full-text search fast.", "db"),
]


@pytest.fixture(scope="module")
def app_modules() -> Iterator[Any]:
    """The example's ``articles`` package, imported from examples/existing_app."""
    sys.path.insert(0, str(APP))
    try:
        import articles.models
        import articles.search

        yield articles
    finally:
        sys.path.remove(str(APP))
        for name in [m for m in sys.modules if m == "articles" or m.startswith("articles.")]:
            del sys.modules[name]


def _run(args: list[str], url: str) -> str:
    env = {**os.environ, "APP_DATABASE_URL": url, "HYBRIDSEARCH_DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, *args], cwd=APP, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def app_url(database_url: str, app_modules: Any) -> Iterator[str]:
    """A fresh database migrated by the application's alembic, then by hybridsearch's."""
    name = f"app_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(database_url, name)
    # The two commands examples/existing_app/README.md gives, as a deployment runs them.
    _run(["-m", "alembic", "-c", str(APP / "alembic.ini"), "upgrade", "head"], url)
    _run(["-m", "hybridsearch.cli", "db", "upgrade"], url)
    yield url
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def engine(app_url: str) -> Iterator[Engine]:
    engine = create_engine(migrate.sqlalchemy_url(app_url))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def app_hs(app_url: str, settings: Settings) -> Iterator[HybridSearch]:
    app_settings = Settings(database_url=app_url, data_dir=settings.data_dir, torch_threads=1)
    with HybridSearch(app_settings) as client:
        yield client


@pytest.fixture(scope="module")
def indexed(engine: Engine, app_hs: HybridSearch, app_modules: Any, app_url: str) -> dict[str, int]:
    """The articles inserted by the application after it synced its table, and written
    by the worker (the real default embedding model); title → primary key."""
    assert app_modules.search.sync_articles(app_hs) == 0  # nothing there yet
    Article = app_modules.models.Article
    with Session(engine) as session, session.begin():
        session.add_all(Article(title=t, body=b, section=s) for t, b, s in ARTICLES)
    report = app_modules.search.run_worker(app_hs)
    assert (report.written, report.failed) == (len(ARTICLES), 0)
    with Session(engine) as session:
        return {a.title: a.id for a in session.scalars(select(Article))}


def test_two_histories_share_the_database(engine: Engine, app_url: str, app_modules: Any) -> None:
    with engine.connect() as conn:
        app_version = conn.execute(text("SELECT version_num FROM public.alembic_version"))
        assert app_version.scalars().all() == ["a1_articles"]
        ours = conn.execute(text("SELECT version_num FROM hybridsearch.alembic_version"))
        assert ours.scalars().all() == [migrate.head_revision()]
        # The application's autogenerate sees its own schema as up to date: hybridsearch's
        # tables are neither proposed for creation nor for removal.
        assert (
            compare_metadata(MigrationContext.configure(conn), app_modules.models.Base.metadata)
            == []
        )
    assert tables.metadata is not app_modules.models.Base.metadata
    assert set(app_modules.models.Base.metadata.tables) == {"articles"}


def test_the_example_command_line_searches(indexed: dict[str, int], app_url: str) -> None:
    out = _run(["-m", "articles", "search", "sourdough starter"], app_url)
    assert out.splitlines()[0] == f"1\t{indexed['Sourdough at home']}\tSourdough at home"


def _stored(app_hs: HybridSearch, engine: Engine) -> dict[str, tuple[str, Any]]:
    """external id → (content hash, metadata) of the articles collection."""
    with Session(engine) as session:
        documents = session.scalars(
            select(tables.DocumentRow)
            .join(tables.CollectionRow)
            .where(tables.CollectionRow.name == "articles")
        ).all()
        return {d.external_id: (d.content_hash, d.metadata_) for d in documents}


def test_the_applications_own_writes_keep_the_collection_right(
    engine: Engine, indexed: dict[str, int], app_hs: HybridSearch, app_modules: Any
) -> None:
    Article = app_modules.models.Article
    search = app_modules.search
    before = _stored(app_hs, engine)
    with Session(engine) as session:  # rolled back: queues nothing
        session.add(Article(title="Never saved", body="Rolled back.", section="x"))
        session.flush()
        session.rollback()
    with Session(engine) as session, session.begin():
        session.get(Article, indexed["Sourdough at home"]).body = "Rye flour and a long rise."
        session.get(Article, indexed["Cats and their purring"]).published = False  # not synced
        added = Article(title="Kimchi", body="Napa cabbage ferments with salt.", section="food")
        session.add(added)
        session.flush()
        added_id = str(added.id)
    status = app_hs.sync_status()
    assert [(s.table, s.queued) for s in status] == [("public.articles", 2)]
    report = search.run_worker(app_hs)
    assert (report.written, report.deleted, report.failed) == (2, 0, 0)
    after = _stored(app_hs, engine)
    assert set(after) == set(before) | {added_id}
    sourdough = str(indexed["Sourdough at home"])
    assert after[sourdough][0] != before[sourdough][0]
    assert after[added_id][1] == {"section": "food"}
    with Session(engine) as session:
        assert search.search_articles(app_hs, session, "cabbage")[0].article.title == "Kimchi"
        session.get(Article, indexed["Cats and their purring"]).published = True
        session.delete(session.get(Article, int(added_id)))
        session.commit()
    assert search.run_worker(app_hs).deleted == 1
    assert set(_stored(app_hs, engine)) == set(before)
    with Session(engine) as session, session.begin():
        session.get(Article, indexed["Sourdough at home"]).body = ARTICLES[1][1]
    search.run_worker(app_hs)
    assert _stored(app_hs, engine) == before


def test_rows_are_indexed_under_their_primary_keys(
    engine: Engine, indexed: dict[str, int], app_hs: HybridSearch
) -> None:
    with Session(engine) as session:
        documents = session.scalars(
            select(tables.DocumentRow)
            .join(tables.CollectionRow)
            .where(tables.CollectionRow.name == "articles")
        ).all()
        assert sorted(d.external_id for d in documents) == sorted(map(str, indexed.values()))
        assert all(d.chunk_count >= 1 for d in documents)
        chunk = session.scalars(select(tables.ChunkRow).limit(1)).one()
        assert len(chunk.embedding) == app_hs.get_collection("articles").dimensions


def test_search_joins_results_to_rows_in_one_statement(
    engine: Engine, indexed: dict[str, int], app_hs: HybridSearch, app_modules: Any
) -> None:
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    with Session(engine) as session:
        session.connection()  # begin outside the count
        event.listen(engine, "before_cursor_execute", record)
        try:
            hits = app_modules.search.search_articles(
                app_hs, session, "how do I make bread with a starter", limit=3
            )
        finally:
            event.remove(engine, "before_cursor_execute", record)
    assert len(statements) == 1
    assert "hybridsearch.search_hybrid" in statements[0] and "articles" in statements[0]
    assert [h.rank for h in hits] == sorted(h.rank for h in hits)
    assert hits[0].article.title == "Sourdough at home"
    assert hits[0].article.id == indexed["Sourdough at home"]


def test_application_conditions_apply_in_the_same_query(
    engine: Engine, indexed: dict[str, int], app_hs: HybridSearch, app_modules: Any
) -> None:
    search = app_modules.search.search_articles
    with Session(engine) as session:
        db_only = search(app_hs, session, "postgres indexes", section="db")
        assert {h.article.section for h in db_only} == {"db"}
        assert {h.article.title for h in db_only} == {
            "Tuning PostgreSQL autovacuum",
            "Indexing text in PostgreSQL",
        }
        assert search(app_hs, session, "cats purring")[0].article.title == "Cats and their purring"
        cats = session.get(app_modules.models.Article, indexed["Cats and their purring"])
        cats.published = False
        session.commit()
        try:
            hits = search(app_hs, session, "cats purring")
            assert "Cats and their purring" not in {h.article.title for h in hits}
        finally:
            cats.published = True
            session.commit()


def test_table_valued_functions_match_the_sql_api(
    engine: Engine, indexed: dict[str, int], app_hs: HybridSearch
) -> None:
    query = "sourdough bread"
    embedding = app_hs.embedder(app_hs.get_collection("articles")).embed_query(query)
    vector = tables.search_vector("articles", embedding, top_k=3)
    keyword = tables.search_keyword("articles", query, top_k=3)
    hybrid = tables.search_hybrid("articles", embedding, query, top_k=3)
    as_text = str(embedding.tolist())
    with Session(engine) as session:

        def rows(statement: Any) -> list[tuple[Any, ...]]:
            return [tuple(row) for row in session.execute(statement)]

        assert rows(select(vector).order_by(vector.c.vector_rank)) == rows(
            text(
                "SELECT * FROM hybridsearch.search_vector('articles', CAST(:e AS vector), 3)"
            ).bindparams(e=as_text)
        )
        assert rows(select(keyword).order_by(keyword.c.keyword_rank)) == rows(
            text("SELECT * FROM hybridsearch.search_keyword('articles', :q, 3)").bindparams(q=query)
        )
        fused = session.execute(select(hybrid).order_by(hybrid.c.fused_rank)).mappings().all()
    expected = app_hs.search("articles", query, top_k=3, top_n=3, rerank=False).candidates
    assert [(r["chunk_id"], r["document_id"]) for r in fused] == [
        (h.chunk_id, h.document_id) for h in expected
    ]
    assert fused[0]["document_id"] == str(indexed["Sourdough at home"])
    # fusion left out is the collection's, as in the service's search
    before = app_hs.get_collection("articles").settings
    app_hs.update_collection_settings("articles", fusion="rrf", rrf_k=7, vector_weight=0.25)
    try:
        with Session(engine) as session:
            fused = session.execute(select(hybrid).order_by(hybrid.c.fused_rank)).mappings().all()
        expected = app_hs.search("articles", query, top_k=3, top_n=3, rerank=False).candidates
    finally:
        app_hs.update_collection_settings(
            "articles", fusion=before.fusion, rrf_k=before.rrf_k, vector_weight=before.vector_weight
        )
    assert [(r["chunk_id"], r["fused_score"]) for r in fused] == [
        (h.chunk_id, pytest.approx(h.scores.fused)) for h in expected
    ]
    assert fused[0]["fused_score"] < 1  # RRF with k 7: at most 0.25/8 + 1/8


def test_models_match_the_installed_schema(engine: Engine) -> None:
    """Every column of every hybridsearch table is mapped, with a compatible type."""
    inspector = inspect(engine)
    installed = set(inspector.get_table_names(schema=tables.SCHEMA)) - {"alembic_version"}
    installed = {t for t in installed if not t.startswith("chunks_")}  # per-collection partitions
    # Plumbing read through functions, never joined by an application: the sync queue
    # (hybridsearch.sync_status()) and the API keys' salted hashes.
    installed -= {"synced_tables", "sync_queue", "sync_failures", "api_keys"}
    mapped = {t.name for t in tables.metadata.sorted_tables}
    assert mapped == installed
    for table in tables.metadata.sorted_tables:
        columns = {c["name"]: c for c in inspector.get_columns(table.name, schema=tables.SCHEMA)}
        assert set(columns) == set(table.columns.keys()), table.name
        for name, mapped_column in table.columns.items():
            reflected = columns[name]["type"]
            assert mapped_column.type._type_affinity is reflected._type_affinity, (
                f"{table.name}.{name}: mapped {mapped_column.type}, installed {reflected}"
            )
            assert mapped_column.nullable == columns[name]["nullable"], f"{table.name}.{name}"
