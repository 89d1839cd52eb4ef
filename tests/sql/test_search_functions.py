"""Semantics of the SQL API, called exactly as a SQL user would call it."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from hybridsearch.fusion import fuse
from hybridsearch.params import RRF_K

# (external id, text, metadata, 3-d embedding)
ROWS = [
    ("a", "postgres stores vectors", {"lang": "en", "year": 2024}, [1.0, 0.0, 0.0]),
    ("b", "vectors and keywords fused", {"lang": "en", "year": 2023}, [0.9, 0.1, 0.0]),
    ("c", "keyword search with postgres", {"lang": "de"}, [0.0, 1.0, 0.0]),
    ("d", "cats sleep all day", {"lang": "en"}, [0.0, 0.0, 1.0]),
    ("e", "postgres postgres postgres", {"lang": "en", "tags": ["x", "y"]}, [0.0, 0.7, 0.7]),
]


def _insert(conn: psycopg.Connection, collection_id: int, rows: list) -> None:
    for external_id, text, metadata, embedding in rows:
        document_id = conn.execute(
            "INSERT INTO hybridsearch.documents"
            " (collection_id, external_id, metadata, content_hash,"
            " chunk_count) VALUES (%s, %s, %s, 'h', 1) RETURNING document_id",
            (collection_id, external_id, Jsonb(metadata)),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO hybridsearch.chunks (collection_id, document_id, ordinal, content,"
            " metadata, embedding, fts)"
            " SELECT %s, %s, 0, %s, %s, %s, a.fts"
            " FROM (SELECT hybridsearch.document_tsvector('mixed', %s) AS fts) AS a",
            (collection_id, document_id, text, Jsonb(metadata), np.array(embedding), text),
        )


def _insert_random(
    conn: psycopg.Connection,
    collection_id: int,
    dims: int,
    n: int,
    group: str = "i %% 10",
    analyze: bool = True,
) -> None:
    """n chunks of one document with random vectors: enough rows that the planner
    prefers the HNSW index to a sort. Chunk i has metadata {"i": <group>}, a SQL
    expression of i (its % doubled)."""
    conn.execute(
        """
        WITH doc AS (
            INSERT INTO hybridsearch.documents
                (collection_id, external_id, content_hash, chunk_count)
            VALUES (%(c)s, 'bulk-' || gen_random_uuid(), 'h', %(n)s) RETURNING document_id
        )
        INSERT INTO hybridsearch.chunks
            (collection_id, document_id, ordinal, content, metadata, embedding, fts)
        SELECT %(c)s, doc.document_id, i, 'chunk ' || i, jsonb_build_object('i', {group}),
               -- "WHERE i >= 0" correlates the subquery so each row gets its own vector
               (SELECT array_agg(random() - 0.5) FROM generate_series(1, %(d)s)
                WHERE i >= 0)::vector,
               ''::tsvector
        FROM doc, generate_series(0, %(n)s - 1) AS i
        """.replace("{group}", group),
        {"c": collection_id, "n": n, "d": dims},
    )
    if analyze:
        conn.execute("ANALYZE hybridsearch.chunks")


@pytest.fixture
def small(conn: psycopg.Connection) -> Iterator[str]:
    """A 3-d collection holding ROWS, created and filled through SQL only."""
    name = f"sql_{uuid.uuid4().hex[:10]}"
    collection_id = conn.execute(
        "SELECT (hybridsearch.create_collection(%s, 'test-model', 3)).collection_id", (name,)
    ).fetchone()[0]
    _insert(conn, collection_id, ROWS)
    yield name
    conn.execute("SELECT hybridsearch.drop_collection(%s)", (name,))


def _ids(conn: psycopg.Connection, sql: str, params: tuple) -> list[str]:
    return [r[0] for r in conn.execute(sql, params).fetchall()]


def test_vector_topk_orders_by_distance(conn: psycopg.Connection, small: str) -> None:
    rows = conn.execute(
        "SELECT c.content, v.vector_rank, v.vector_distance"
        " FROM hybridsearch.search_vector(%s, '[1,0,0]', 3) v"
        " JOIN hybridsearch.chunks c USING (chunk_id) ORDER BY v.vector_rank",
        (small,),
    ).fetchall()
    assert [r[0] for r in rows] == [
        "postgres stores vectors",
        "vectors and keywords fused",
        rows[2][0],
    ]
    assert [r[1] for r in rows] == [1, 2, 3]
    assert rows[0][2] == pytest.approx(0.0, abs=1e-6)
    assert rows[0][2] <= rows[1][2] <= rows[2][2]


def _external_ids(conn: psycopg.Connection, collection: str) -> dict[int, str]:
    """chunk_id -> the external id its document was added with."""
    rows = conn.execute(
        "SELECT c.chunk_id, d.external_id FROM hybridsearch.chunks AS c"
        " JOIN hybridsearch.documents AS d"
        "   ON d.collection_id = c.collection_id AND d.document_id = c.document_id"
        " JOIN hybridsearch.collections AS k ON k.collection_id = c.collection_id"
        " WHERE k.name = %s",
        (collection,),
    ).fetchall()
    return dict(rows)


VECTOR_LEG = "SELECT * FROM hybridsearch.search_vector(%s, '[1,0,0]', 10)"
KEYWORD_LEG = "SELECT * FROM hybridsearch.search_keyword(%s, 'postgres', 10)"


def test_vector_and_keyword_legs_return_the_external_id(
    conn: psycopg.Connection, small: str
) -> None:
    """search_vector and search_keyword name each chunk's document by the id it was added
    with (document_id, as search_hybrid does), next to the chunk's internal id."""
    vector = conn.execute(VECTOR_LEG, (small,)).fetchall()
    keyword = conn.execute(KEYWORD_LEG, (small,)).fetchall()
    assert [r[1] for r in vector[:2]] == ["a", "b"]  # [1,0,0] and [0.9,0.1,0]
    assert len(vector) == len(ROWS)
    assert [r[1] for r in keyword] == ["e", "a", "c"]  # three occurrences first, then by id
    owners = _external_ids(conn, small)
    assert all(owners[r[0]] == r[1] for r in vector + keyword)
    # The same legs, ranks and scores as search_hybrid's with the other leg left out.
    vector_only = conn.execute(
        "SELECT chunk_id, document_id, vector_rank, vector_distance"
        " FROM hybridsearch.search_hybrid(%s, '[1,0,0]', NULL, 10) ORDER BY vector_rank",
        (small,),
    ).fetchall()
    keyword_only = conn.execute(
        "SELECT chunk_id, document_id, keyword_rank, keyword_score"
        " FROM hybridsearch.search_hybrid(%s, NULL, 'postgres', 10) ORDER BY keyword_rank",
        (small,),
    ).fetchall()
    assert vector == vector_only
    assert keyword == keyword_only


def test_legs_under_row_level_security_name_the_tenants_documents(
    conn: psycopg.Connection,
) -> None:
    """As a role subject to row-level security, with a tenant set for the transaction,
    both legs return that tenant's chunks with their external ids (the lookup reads the
    documents under the same policies), and nothing with no tenant set. Two tenants
    added a document under the same external id; each sees its own."""
    name = f"rls_{uuid.uuid4().hex[:8]}"
    role = f"rls_reader_{uuid.uuid4().hex[:8]}"
    collection_id = conn.execute(
        "SELECT (hybridsearch.create_collection(%s, 'test-model', 3)).collection_id", (name,)
    ).fetchone()[0]
    documents = [  # (tenant, external id, text, embedding)
        ("acme", "shared", "acme postgres notes", [1.0, 0.0, 0.0]),
        ("acme", "acme-only", "postgres tuning at acme", [0.9, 0.1, 0.0]),
        ("globex", "shared", "globex postgres notes", [1.0, 0.0, 0.0]),
        ("globex", "globex-only", "postgres backups at globex", [0.0, 1.0, 0.0]),
    ]
    chunk_tenant = {}
    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    try:
        for tenant, external_id, text, embedding in documents:
            chunk_id = conn.execute(
                """
                WITH doc AS (
                    INSERT INTO hybridsearch.documents
                        (collection_id, external_id, tenant_id, content_hash, chunk_count)
                    VALUES (%(c)s, %(x)s, %(t)s, 'h', 1) RETURNING document_id
                )
                INSERT INTO hybridsearch.chunks (collection_id, document_id, tenant_id,
                    ordinal, content, embedding, fts)
                SELECT %(c)s, doc.document_id, %(t)s, 0, %(text)s, %(e)s,
                       hybridsearch.document_tsvector('mixed', %(text)s)
                FROM doc RETURNING chunk_id
                """,
                {
                    "c": collection_id,
                    "x": external_id,
                    "t": tenant,
                    "text": text,
                    "e": np.array(embedding),
                },
            ).fetchone()[0]
            chunk_tenant[chunk_id] = (tenant, external_id)
        conn.execute(
            sql.SQL(
                "GRANT USAGE ON SCHEMA hybridsearch TO {0};"
                " GRANT SELECT ON ALL TABLES IN SCHEMA hybridsearch TO {0}"
            ).format(sql.Identifier(role))
        )
        for tenant in ("acme", "globex", None):
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
                if tenant is not None:
                    conn.execute("SELECT set_config('hybridsearch.tenant_id', %s, true)", (tenant,))
                vector = conn.execute(VECTOR_LEG, (name,)).fetchall()
                keyword = conn.execute(KEYWORD_LEG, (name,)).fetchall()
            if tenant is None:
                assert vector == [] and keyword == []
                continue
            own = {(t, x) for t, x in chunk_tenant.values() if t == tenant}
            assert {(tenant, r[1]) for r in vector} == own
            assert {(tenant, r[1]) for r in keyword} == own
            assert all(chunk_tenant[r[0]] == (tenant, r[1]) for r in vector + keyword)
    finally:
        conn.execute("SELECT hybridsearch.drop_collection(%s)", (name,))
        conn.execute(sql.SQL("DROP OWNED BY {0}; DROP ROLE {0}").format(sql.Identifier(role)))


def test_filter_applies_in_both_branches(conn: psycopg.Connection, small: str) -> None:
    hybrid = _ids(
        conn,
        "SELECT document_id FROM hybridsearch.search_hybrid(%s, '[1,0,0]', 'postgres', 10, %s)",
        (small, Jsonb({"lang": "en"})),
    )
    assert set(hybrid) == {"a", "b", "d", "e"}  # c is German, filtered from both branches
    keyword = conn.execute(
        "SELECT count(*) FROM hybridsearch.search_keyword(%s, 'postgres', 10, %s)",
        (small, Jsonb({"lang": "de"})),
    ).fetchone()[0]
    assert keyword == 1
    nested = _ids(
        conn,
        "SELECT document_id FROM hybridsearch.search_hybrid(%s, '[1,0,0]', 'postgres', 10, %s)",
        (small, Jsonb({"tags": ["y"]})),
    )
    assert nested == ["e"]
    # {} is contained in every chunk's metadata: the same as no filter, in every branch
    for call in (
        "SELECT chunk_id, keyword_score FROM hybridsearch.search_keyword(%s, 'postgres', 10, %s)",
        "SELECT chunk_id, vector_distance FROM hybridsearch.search_vector(%s, '[1,0,0]', 10, %s)",
        "SELECT document_id FROM hybridsearch.search_hybrid(%s, '[1,0,0]', 'postgres', 10, %s)",
    ):
        unfiltered = conn.execute(call, (small, None)).fetchall()
        assert len(unfiltered) >= 3
        assert conn.execute(call, (small, Jsonb({}))).fetchall() == unfiltered


def test_empty_keyword_branch_keeps_vector_results(conn: psycopg.Connection, small: str) -> None:
    rows = conn.execute(
        "SELECT document_id, vector_rank, keyword_rank FROM"
        " hybridsearch.search_hybrid(%s, '[0,0,1]', 'zzzunknownword', 2)",
        (small,),
    ).fetchall()
    assert [r[0] for r in rows] == ["d", "e"]
    assert all(r[2] is None for r in rows)
    # A query of stop words and operators is an empty branch, never an error.
    assert (
        conn.execute(
            "SELECT count(*) FROM hybridsearch.search_keyword(%s, %s, 5)",
            (small, "the & | !( <-> "),
        ).fetchone()[0]
        == 0
    )


def test_keyword_only_and_vector_only(conn: psycopg.Connection, small: str) -> None:
    keyword_only = conn.execute(
        "SELECT document_id, vector_rank FROM hybridsearch.search_hybrid(%s, NULL, 'postgres', 10)",
        (small,),
    ).fetchall()
    assert {r[0] for r in keyword_only} == {"a", "c", "e"}
    assert all(r[1] is None for r in keyword_only)
    assert keyword_only[0][0] == "e"  # three occurrences beat one
    vector_only = _ids(
        conn, "SELECT document_id FROM hybridsearch.search_hybrid(%s, '[0,1,0]', NULL, 1)", (small,)
    )
    assert vector_only == ["c"]


def test_top_k_larger_than_corpus(conn: psycopg.Connection, small: str) -> None:
    count = conn.execute(
        "SELECT count(*) FROM hybridsearch.search_hybrid(%s, '[1,0,0]', 'postgres', 500)", (small,)
    ).fetchone()[0]
    assert count == len(ROWS)


def test_ties_break_by_chunk_id(conn: psycopg.Connection, small: str) -> None:
    # Same text and same vector: identical scores in both branches.
    collection_id = conn.execute(
        "SELECT collection_id FROM hybridsearch.collections WHERE name = %s", (small,)
    ).fetchone()[0]
    _insert(
        conn,
        collection_id,
        [(f"tie{i}", "identical twin text", {}, [0.5, 0.5, 0.0]) for i in range(4)],
    )
    # Within a branch, equal distances rank by chunk_id; RRF then follows those ranks.
    branch = conn.execute(
        "SELECT chunk_id, vector_distance FROM hybridsearch.search_vector(%s, '[0.5,0.5,0]', 4)",
        (small,),
    ).fetchall()
    assert len({round(r[1], 9) for r in branch}) == 1
    assert [r[0] for r in branch] == sorted(r[0] for r in branch)
    # Weighted fusion gives exact ties (all normalise to 1): fused order is by chunk_id.
    weighted = conn.execute(
        "SELECT chunk_id, fused_score FROM hybridsearch.search_hybrid(%s, '[0.5,0.5,0]',"
        " 'identical twin', 4, p_fusion => 'weighted')",
        (small,),
    ).fetchall()
    assert len({r[1] for r in weighted}) == 1
    assert [r[0] for r in weighted] == sorted(r[0] for r in weighted)
    assert [r[0] for r in weighted] == [r[0] for r in branch]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        (
            "SELECT * FROM hybridsearch.search_vector('no_such_collection', '[1,0,0]')",
            "does not exist",
        ),
        ("SELECT * FROM hybridsearch.search_vector({name}, '[1,0]')", "expects 3"),
        ("SELECT * FROM hybridsearch.search_vector({name}, '[1,0,0]', 0)", "top_k"),
        (
            "SELECT * FROM hybridsearch.search_hybrid({name}, '[1,0,0]', 'x', 10, '[1]')",
            "JSON object",
        ),
        (
            "SELECT * FROM hybridsearch.search_hybrid({name}, '[1,0,0]', 'x', 10, NULL, 'max')",
            "zscore, rrf or weighted",
        ),
    ],
)
def test_bad_arguments_raise_clear_errors(
    conn: psycopg.Connection, small: str, sql: str, message: str
) -> None:
    with pytest.raises(psycopg.Error, match=message):
        conn.execute(sql.replace("{name}", "%s"), (small,) if "{name}" in sql else ())


def test_dimension_is_enforced_on_insert(conn: psycopg.Connection, small: str) -> None:
    collection_id = conn.execute(
        "SELECT collection_id FROM hybridsearch.collections WHERE name = %s", (small,)
    ).fetchone()[0]
    with pytest.raises(psycopg.errors.CheckViolation):
        _insert(conn, collection_id, [("bad", "wrong size", {}, [1.0, 0.0])])
    with pytest.raises(psycopg.errors.DataException, match="NaN"):
        conn.execute("SELECT '[NaN,0,0]'::vector")


def test_collections_with_different_dimensions_use_hnsw(conn: psycopg.Connection) -> None:
    names = [f"dims_{d}_{uuid.uuid4().hex[:6]}" for d in (3, 8)]
    try:
        for name, dims in zip(names, (3, 8), strict=True):
            collection_id = conn.execute(
                "SELECT (hybridsearch.create_collection(%s, 'm', %s)).collection_id", (name, dims)
            ).fetchone()[0]
            _insert_random(conn, collection_id, dims, 3000)
            plan = "\n".join(
                r[0]
                for r in conn.execute(
                    "EXPLAIN SELECT c.chunk_id FROM hybridsearch.chunks c"
                    " WHERE c.collection_id = %s"
                    f" ORDER BY c.embedding::vector({dims}) <=> %s::vector({dims}) LIMIT 10",
                    (collection_id, np.ones(dims)),
                ).fetchall()
            )
            assert f"chunks_{collection_id}_embedding_idx" in plan, plan
            found = conn.execute(
                "SELECT count(*) FROM hybridsearch.search_vector(%s, %s, 10)", (name, np.ones(dims))
            ).fetchone()[0]
            assert found == 10
    finally:
        for name in names:
            conn.execute("SELECT hybridsearch.drop_collection(%s)", (name,))


def _plans(conn: psycopg.Connection, query: str, params: tuple) -> list[str]:
    """The plans of the statements run inside ``query``, as auto_explain logs them."""
    notices: list[str] = []

    def collect(diagnostic: psycopg.errors.Diagnostic) -> None:
        notices.append(diagnostic.message_primary or "")

    conn.add_notice_handler(collect)
    conn.execute("LOAD 'auto_explain'")
    conn.execute("SET auto_explain.log_min_duration = 0")
    conn.execute("SET auto_explain.log_nested_statements = on")
    conn.execute("SET auto_explain.log_level = notice")
    conn.execute("SET client_min_messages = notice")
    try:
        conn.execute(query, params)
    finally:
        conn.execute("SET auto_explain.log_min_duration = -1")
        conn.remove_notice_handler(collect)
    return notices


def test_search_vector_plan_uses_hnsw(conn: psycopg.Connection) -> None:
    """The plan inside search_vector (captured with auto_explain) scans the HNSW index.

    pgvector prices an index scan by ef_search: at search_vector's 200, the planner
    rightly reads a partition of 5,000 chunks or fewer whole (exact, in about 1 ms); at
    10,000 the index must win."""
    name = f"plan_{uuid.uuid4().hex[:6]}"
    collection_id = conn.execute(
        "SELECT (hybridsearch.create_collection(%s, 'm', 4)).collection_id", (name,)
    ).fetchone()[0]
    try:
        _insert_random(conn, collection_id, 4, 10_000)
        notices = _plans(
            conn, "SELECT * FROM hybridsearch.search_vector(%s, %s, 50)", (name, np.ones(4))
        )
        plans = [n for n in notices if "nearest" in n]
        assert plans and f"chunks_{collection_id}_embedding_idx" in plans[0], notices
    finally:
        conn.execute("SELECT hybridsearch.drop_collection(%s)", (name,))


def test_hybrid_looks_up_only_the_fused_chunks(conn: psycopg.Connection) -> None:
    """search_hybrid reads the content and document of each fused chunk by key. As a plain
    join, the planner could not tell how few rows the fusion returns and hashed every
    document of the collection (11 ms a query for 51,000 documents)."""
    name = f"look_{uuid.uuid4().hex[:6]}"
    collection_id = conn.execute(
        "SELECT (hybridsearch.create_collection(%s, 'm', 4)).collection_id", (name,)
    ).fetchone()[0]
    try:
        conn.execute(
            """
            WITH docs AS (
                INSERT INTO hybridsearch.documents
                    (collection_id, external_id, content_hash, chunk_count)
                SELECT %(c)s, 'doc-' || i, 'h', 1 FROM generate_series(0, 2999) AS i
                RETURNING document_id, external_id
            )
            INSERT INTO hybridsearch.chunks
                (collection_id, document_id, ordinal, content, embedding, fts)
            SELECT %(c)s, docs.document_id, 0, 'text of ' || docs.external_id,
                   ARRAY[random(), random(), random(), random() + docs.document_id * 0]::vector,
                   to_tsvector('simple', 'word ' || docs.external_id)
            FROM docs
            """,
            {"c": collection_id},
        )
        conn.execute("ANALYZE hybridsearch.documents, hybridsearch.chunks")
        call = "SELECT * FROM hybridsearch.search_hybrid(%s, %s, 'word', 20)"
        rows = conn.execute(call, (name, np.ones(4))).fetchall()
        assert len(rows) == 20
        assert all(r[3] == f"text of {r[2]}" for r in rows)  # each chunk with its document
        plans = _plans(conn, call, (name, np.ones(4)))
        assert not any("Seq Scan on documents" in p for p in plans), plans
    finally:
        conn.execute("SELECT hybridsearch.drop_collection(%s)", (name,))


def _exact_nearest(
    conn: psycopg.Connection, collection_id: int, query: np.ndarray, flt: dict, k: int
) -> list[tuple[int, float]]:
    """The filtered top k by a sort of every matching row (computed below a fence: no
    index scan can order them)."""
    return conn.execute(
        "SELECT m.chunk_id, m.distance FROM (SELECT chunk_id, embedding <=> %s AS distance"
        " FROM hybridsearch.chunks WHERE collection_id = %s AND metadata @> %s OFFSET 0) AS m"
        " ORDER BY 2, 1 LIMIT %s",
        (query, collection_id, Jsonb(flt), k),
    ).fetchall()


def test_selective_filter_ranks_matching_chunks_exactly(conn: psycopg.Connection) -> None:
    """A filter the planner expects to match few chunks skips the HNSW graph (which would
    walk thousands of neighbours to find K that match) and ranks all matching chunks."""
    name = f"sel_{uuid.uuid4().hex[:6]}"
    collection_id = conn.execute(
        "SELECT (hybridsearch.create_collection(%s, 'm', 4)).collection_id", (name,)
    ).fetchone()[0]
    try:
        _insert_random(conn, collection_id, 4, 3000, group="i %% 100")  # 30 chunks each
        rng = np.random.default_rng(3)
        for group in (7, 42):
            query = rng.normal(size=4)
            call = (
                "SELECT chunk_id, vector_distance FROM hybridsearch.search_vector(%s, %s, 20, %s)"
            )
            found = conn.execute(call, (name, query, Jsonb({"i": group}))).fetchall()
            expected = _exact_nearest(conn, collection_id, query, {"i": group}, 20)
            assert [r[0] for r in found] == [r[0] for r in expected]
            assert [r[1] for r in found] == pytest.approx([r[1] for r in expected], abs=1e-6)
            plans = _plans(conn, call, (name, query, Jsonb({"i": group})))
            assert not any(f"chunks_{collection_id}_embedding_idx" in p for p in plans), plans
        # more than the 30 that match: all of them, nearest first
        query = rng.normal(size=4)
        found = conn.execute(
            "SELECT chunk_id FROM hybridsearch.search_vector(%s, %s, 50, %s)",
            (name, query, Jsonb({"i": 3})),
        ).fetchall()
        assert [r[0] for r in found] == [
            r[0] for r in _exact_nearest(conn, collection_id, query, {"i": 3}, 50)
        ]
        assert len(found) == 30
    finally:
        conn.execute("SELECT hybridsearch.drop_collection(%s)", (name,))


def test_broad_and_misestimated_filters_use_hnsw(conn: psycopg.Connection) -> None:
    """A filter expected to match over 20,000 chunks goes through the HNSW index. One the
    statistics wrongly call rare is tried exactly, which gives up past 20,000 matches, and
    then the same way."""
    name = f"broad_{uuid.uuid4().hex[:6]}"
    collection_id = conn.execute(
        "SELECT (hybridsearch.create_collection(%s, 'm', 4)).collection_id", (name,)
    ).fetchone()[0]
    partition = sql.Identifier(f"chunks_{collection_id}")
    try:
        conn.execute(
            sql.SQL("ALTER TABLE hybridsearch.{} SET (autovacuum_enabled = off)").format(partition)
        )
        conn.execute("SELECT hybridsearch.drop_chunk_indexes(%s)", (name,))
        _insert_random(conn, collection_id, 4, 21000, group="'broad'")
        # after the statistics: they know no chunk with "late"
        _insert_random(conn, collection_id, 4, 21000, group="'late'", analyze=False)
        conn.execute("SELECT hybridsearch.create_chunk_indexes(%s)", (name,))
        call = (
            "SELECT v.chunk_id, v.vector_distance, c.metadata"
            " FROM hybridsearch.search_vector(%s, %s, 50, %s) AS v"
            " JOIN hybridsearch.chunks AS c ON c.chunk_id = v.chunk_id"
            " ORDER BY v.vector_rank"
        )
        query = np.random.default_rng(5).normal(size=4)
        for group, tries_exact in (("broad", False), ("late", True)):
            flt = Jsonb({"i": group})
            found = conn.execute(call, (name, query, flt)).fetchall()
            assert len(found) == 50
            assert all(r[2] == {"i": group} for r in found)
            assert [r[1] for r in found] == sorted(r[1] for r in found)
            plans = _plans(conn, call, (name, query, flt))
            assert any("CTE matching" in p for p in plans) == tries_exact, plans
            # (the planner, as misinformed, may read the misestimated one's index or not)
            assert any("AS nearest" in p for p in plans), plans
            if not tries_exact:
                assert any(f"chunks_{collection_id}_embedding_idx" in p for p in plans), plans
    finally:
        conn.execute("SELECT hybridsearch.drop_collection(%s)", (name,))


@pytest.mark.parametrize("method", ["zscore", "rrf", "weighted"])
def test_sql_fusion_matches_python_reference(conn: psycopg.Connection, method: str) -> None:
    rng = random.Random(7)
    for _ in range(60):
        pool = rng.sample(range(1, 200), 60)
        vector = sorted(
            (
                (cid, rng.choice([rng.random(), 0.25]))
                for cid in rng.sample(pool, rng.randint(0, 30))
            ),
            key=lambda x: x[1],
        )
        keyword = sorted(
            (
                (cid, rng.choice([rng.random() * 3, 1.0]))
                for cid in rng.sample(pool, rng.randint(0, 30))
            ),
            key=lambda x: -x[1],
        )
        rrf_k = rng.choice([RRF_K.minimum, RRF_K.default, RRF_K.maximum])
        wv, wk = rng.choice([1.0, 0.3, 0.0]), rng.choice([1.0, 0.7])
        limit = rng.randint(1, 40)
        expected = fuse(
            vector,
            keyword,
            method=method,
            rrf_k=rrf_k,
            vector_weight=wv,
            keyword_weight=wk,
            limit=limit,
        )
        rows = conn.execute(
            "SELECT * FROM hybridsearch.fuse_candidates(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                [c for c, _ in vector],
                [d for _, d in vector],
                [c for c, _ in keyword],
                [s for _, s in keyword],
                method,
                rrf_k,
                wv,
                wk,
                limit,
            ),
        ).fetchall()
        assert [r[0] for r in rows] == [f.chunk_id for f in expected]
        for row, ref in zip(rows, expected, strict=True):
            assert row[1] == ref.fused_rank
            assert row[2] == pytest.approx(ref.fused_score, rel=1e-12, abs=1e-15)
            assert (row[3], row[5]) == (ref.vector_rank, ref.keyword_rank)
