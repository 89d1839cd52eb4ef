"""Multi-tenancy by row-level security, with least-privilege roles from sql/roles.sql."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from hybridsearch import Document, HybridSearch, Settings
from hybridsearch.db import migrate

TENANTS = ("acme", "globex", "initech")
WORDS = ["invoice", "contract", "payroll", "roadmap", "audit", "pricing", "support", "hiring"]


def _as_role(url: str, role: str) -> str:
    """The same database, with every connection switched to ``role`` at start-up."""
    parts = urlsplit(url)
    options = urlencode({"options": f"-c role={role}"}, quote_via=quote)
    query = "&".join(q for q in [parts.query, options] if q)
    return urlunsplit(parts._replace(query=query))


@pytest.fixture(scope="module")
def tenant_collection(hs: HybridSearch, database_url: str) -> Iterator[str]:
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(migrate.sql_text("roles.sql"))
    name = f"tenancy_{uuid.uuid4().hex[:8]}"
    hs.create_collection(name)
    for tenant in TENANTS:
        hs.add_documents(
            name,
            [Document(f"{tenant}-{w}", f"The {tenant} {w} report about {w}.") for w in WORDS],
            tenant=tenant,
        )
    yield name
    hs.drop_collection(name)


def test_roles_are_least_privilege(database_url: str, tenant_collection: str) -> None:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT rolname, rolsuper, rolbypassrls, rolcanlogin FROM pg_roles"
            " WHERE rolname LIKE 'hybridsearch\\_%' ORDER BY 1"
        ).fetchall()
        owner = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE schemaname = 'hybridsearch'"
            " AND tablename = 'chunks'"
        ).fetchone()
    assert [r[0] for r in rows] == [
        "hybridsearch_app",
        "hybridsearch_migrator",
        "hybridsearch_owner",
        "hybridsearch_readonly",
    ]
    assert not any(r[1] or r[2] for r in rows)  # no superuser, no BYPASSRLS
    assert owner == ("hybridsearch_owner",)


def test_no_cross_tenant_hits_over_10k_queries(database_url: str, tenant_collection: str) -> None:
    rng = random.Random(3)
    # autocommit: each `with conn.transaction()` is a real transaction, as in the pool
    with psycopg.connect(_as_role(database_url, "hybridsearch_app"), autocommit=True) as conn:
        register_vector(conn)
        assert conn.execute("SELECT current_user").fetchone() == ("hybridsearch_app",)
        vectors = [
            np.array(v, dtype=np.float32) for v in np.random.default_rng(0).normal(size=(50, 384))
        ]
        leaks = queries = 0
        for i in range(10_000):
            tenant = TENANTS[i % len(TENANTS)]
            with conn.transaction():
                conn.execute("SELECT set_config('hybridsearch.tenant_id', %s, true)", (tenant,))
                ids = conn.execute(
                    "SELECT document_id FROM hybridsearch.search_hybrid(%s, %s, %s, 10)",
                    (tenant_collection, rng.choice(vectors), " ".join(rng.sample(WORDS, 2))),
                ).fetchall()
            queries += 1
            leaks += sum(not d.startswith(f"{tenant}-") for (d,) in ids)
            assert ids, "every tenant has matching documents"
        # The tenant setting ended with its transaction: nothing is visible now.
        unset = conn.execute(
            "SELECT count(*) FROM hybridsearch.search_hybrid(%s, %s, 'invoice', 10)",
            (tenant_collection, vectors[0]),
        ).fetchone()
        direct = conn.execute("SELECT count(*) FROM hybridsearch.chunks").fetchone()
    assert (queries, leaks) == (10_000, 0)
    assert unset == (0,) and direct == (0,)


def test_service_api_scopes_pooled_connections_to_the_tenant(
    database_url: str, tenant_collection: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = Settings(
        database_url=_as_role(database_url, "hybridsearch_app"),
        data_dir=tmp_path_factory.mktemp("app"),
        torch_threads=1,
    )
    with HybridSearch(settings, migrate_schema=False) as app:
        for tenant in TENANTS:
            hits = app.search(
                tenant_collection, "payroll", top_k=20, top_n=5, rerank=False, tenant=tenant
            )
            assert hits.results and all(
                h.document_id.startswith(f"{tenant}-") for h in hits.candidates
            )
        # Same pool, no tenant: nothing leaks from the previous transaction.
        assert app.search(tenant_collection, "payroll", rerank=False).candidates == []
        # The app role ingests and deletes only as its tenant.
        report = app.add_documents(
            tenant_collection, [Document("acme-new", "Acme payroll memo.")], tenant="acme"
        )
        assert report.added == 1
        assert app.delete_documents(tenant_collection, ["acme-new"], tenant="globex") == 0
        assert app.delete_documents(tenant_collection, ["acme-new"], tenant="acme") == 1


def test_indexes_are_used_under_row_level_security(
    database_url: str, tenant_collection: str
) -> None:
    """EXPLAIN as the app role: both branches still use their indexes."""
    name = f"rls_plan_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        cid = admin.execute(
            "SELECT (hybridsearch.create_collection(%s, 'm', 4)).collection_id", (name,)
        ).fetchone()[0]
        try:
            admin.execute(
                """
                WITH doc AS (
                    INSERT INTO hybridsearch.documents
                        (collection_id, tenant_id, external_id, content_hash, chunk_count)
                    VALUES (%(c)s, 'acme', 'bulk', 'h', 20000) RETURNING document_id
                )
                INSERT INTO hybridsearch.chunks (collection_id, document_id, tenant_id, ordinal,
                    content, embedding, fts)
                SELECT %(c)s, doc.document_id, 'acme', i, 'word' || i || repeat(' filler', 60),
                       (SELECT array_agg(random() - 0.5) FROM generate_series(1, 4)
                        WHERE i >= 0)::vector,
                       to_tsvector('simple', 'word' || i)
                FROM doc, generate_series(0, 19999) AS i
                """,
                {"c": cid},
            )
            admin.execute("ANALYZE hybridsearch.chunks")
            with psycopg.connect(database_url) as conn:
                notices: list[str] = []
                conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
                # Loading auto_explain needs a superuser; then act as the app role.
                conn.execute("LOAD 'auto_explain'")
                for setting in (
                    "log_min_duration = 0",
                    "log_nested_statements = on",
                    "log_level = notice",
                ):
                    conn.execute(f"SET auto_explain.{setting}")
                conn.execute("SET ROLE hybridsearch_app")
                conn.execute("SELECT set_config('hybridsearch.tenant_id', 'acme', true)")
                conn.execute(
                    "SELECT count(*) FROM hybridsearch.search_hybrid(%s, '[1,0,0,0]', 'word7', 10)",
                    (name,),
                ).fetchone()
                conn.rollback()
            plans = "\n".join(notices)
            assert f"Index Scan using chunks_{cid}_embedding_idx" in plans
            # The keyword branch looks its impact keys up in their GIN index (roles.sql
            # marks text[] @> leakproof), and the policy still filters by tenant.
            assert f"Bitmap Index Scan on chunks_{cid}_impacts_idx" in plans
            assert "tenant_id = 'acme'::text" in plans
        finally:
            admin.execute("SELECT hybridsearch.drop_collection(%s)", (name,))
