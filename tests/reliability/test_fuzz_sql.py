"""Fuzz the SQL API: hybridsearch.search_keyword, parse_keyword_query, search_vector and
search_hybrid, called directly with bound parameters as a SQL user calls them.

Every case gets one of the clean outcomes ``fuzzing.py`` lists, in the order it lists
them, or a sane answer; the database's schema, functions, roles and data are the same
before and after each test.
"""

from __future__ import annotations

import math
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from hybridsearch.params import FUSION, KEYWORD_WEIGHT, RRF_K, VECTOR_WEIGHT
from tests.reliability import fuzzing as fz
from tests.reliability.fuzzing import CASES, SUCCESSES, FuzzDB, fuzz_settings


def _call(conn: psycopg.Connection, query: str, params: Any) -> tuple[list[Any], str]:
    try:
        return conn.execute(query, params).fetchall(), "ok"
    except (psycopg.Error, UnicodeEncodeError) as exc:
        return [], fz.outcome(exc)


def _check_ranked(rows: list[Any], top_k: int, ids: set[int]) -> None:
    """Ranks 1..n over at most top_k distinct chunks of the collection."""
    assert len(rows) <= top_k
    assert [r[1] for r in rows] == list(range(1, len(rows) + 1))
    assert {r[0] for r in rows} <= ids
    assert len({r[0] for r in rows}) == len(rows)


def _existing(name: object) -> bool:
    return isinstance(name, str) and name in fz.COLLECTIONS


# -- SQL API ------------------------------------------------------------------------------

KEYWORD_SQL = (
    "SELECT chunk_id, keyword_rank, keyword_score, document_id"
    " FROM hybridsearch.search_keyword(%s, %s, %s::integer, %s)"
)


def _keyword_case(
    test_name: str, db: FuzzDB, collection: str, query: str | None, top_k: Any, flt: Any
) -> None:
    rows, got = _call(db.conn, KEYWORD_SQL, (collection, query, top_k, flt))
    allowed = fz.first_layer(
        fz.client_errors(collection, query),
        fz.int_param_errors(top_k) | (fz.json_decode_errors(flt.obj) if flt else set()),
        set() if _existing(collection) else {"P0002"},
        {"22023"} if fz.top_k_invalid(top_k) or fz.filter_invalid(flt) else set(),
    )
    assert got in allowed, (got, allowed)
    if got == "ok":
        SUCCESSES[test_name] += 1
        _check_ranked(rows, top_k, db.chunk_ids[collection])
        assert all(r[3] is not None for r in rows)  # document id
        scores = [r[2] for r in rows]
        assert all(math.isfinite(s) and s > 0 for s in scores)
        assert scores == sorted(scores, reverse=True)


@given(
    collection=fz.collection_names,
    query=st.one_of(st.none(), fz.queries),
    top_k=fz.top_ks,
    flt=fz.sql_filters,
)
@fuzz_settings("test_sql_search_keyword")
def test_sql_search_keyword(
    fuzz_db: FuzzDB, unchanged: None, collection: str, query: str | None, top_k: Any, flt: Any
) -> None:
    CASES["test_sql_search_keyword"] += 1
    _keyword_case("test_sql_search_keyword", fuzz_db, collection, query, top_k, flt)


@given(query=fz.big_queries, flt=st.sampled_from([None, Jsonb({"lang": "en"})]))
@fuzz_settings("test_sql_keyword_big_queries")
def test_sql_keyword_big_queries(fuzz_db: FuzzDB, unchanged: None, query: str, flt: Any) -> None:
    """Megabyte queries: the SQL API reads the first 256 tokens and answers."""
    CASES["test_sql_keyword_big_queries"] += 1
    _keyword_case("test_sql_keyword_big_queries", fuzz_db, "fz", query, 10, flt)


ANALYZERS = {
    # analyzer: what parse_keyword_query raises once a token reaches it (None: nothing)
    "mixed": None,
    "cjk": None,
    "english": None,
    "simple": None,
    "pg_catalog.english": None,
    "English": None,
    '"english"': None,
    "klingon": "42704",
    "public.x": "42704",
    "": "42602",
    "english; DROP TABLE hybridsearch.chunks": "42602",
    "a.b.c": "0A000",
}


@given(analyzer=st.sampled_from(sorted(ANALYZERS)), query=st.one_of(st.none(), fz.queries))
@fuzz_settings("test_sql_parse_keyword_query")
def test_sql_parse_keyword_query(
    fuzz_db: FuzzDB, unchanged: None, analyzer: str, query: str | None
) -> None:
    """Web-search syntax never fails for a real analyzer. Decision: an analyzer that is
    not a text search configuration may raise PostgreSQL's own error for it (42704,
    42602, 0A000), since collections only ever store validated analyzers."""
    CASES["test_sql_parse_keyword_query"] += 1
    rows, got = _call(
        fuzz_db.conn,
        "SELECT terms, required::text, excluded::text, highlight::text"
        " FROM hybridsearch.parse_keyword_query(%s, %s)",
        (analyzer, query),
    )
    bad_analyzer = ANALYZERS[analyzer]
    allowed = fz.first_layer(
        fz.client_errors(analyzer, query), {"ok", bad_analyzer} if bad_analyzer else set()
    )
    assert got in allowed, (got, allowed)
    if got == "ok":
        SUCCESSES["test_sql_parse_keyword_query"] += 1
        terms, _required, _excluded, highlight = rows[0]
        assert terms == sorted(set(terms))
        assert all(isinstance(t, str) and t for t in terms)
        assert (highlight is None) == (not terms)


VECTOR_SQL = (
    "SELECT chunk_id, vector_rank, vector_distance, document_id"
    " FROM hybridsearch.search_vector(%s, %s::vector, %s::integer, %s)"
)


@given(
    collection=fz.collection_names,
    values=st.one_of(st.none(), fz.vector_values),
    top_k=fz.top_ks,
    flt=fz.sql_filters,
)
@fuzz_settings("test_sql_search_vector")
def test_sql_search_vector(
    fuzz_db: FuzzDB,
    unchanged: None,
    collection: str,
    values: list[float] | None,
    top_k: Any,
    flt: Any,
) -> None:
    CASES["test_sql_search_vector"] += 1
    text = None if values is None else fz.vector_text(values)
    rows, got = _call(fuzz_db.conn, VECTOR_SQL, (collection, text, top_k, flt))
    wrong_vector = values is None or len(values) != fz.DIMENSIONS
    degenerate = (
        not wrong_vector
        and _existing(collection)
        and fz.degenerate_vector(values, fz.COLLECTIONS[collection])
    )
    allowed = fz.first_layer(
        fz.client_errors(collection),
        fz.int_param_errors(top_k)
        | (fz.vector_decode_errors(values) if values is not None else set())
        | (fz.json_decode_errors(flt.obj) if flt else set()),
        set() if _existing(collection) else {"P0002"},
        {"22023"}
        if fz.top_k_invalid(top_k) or fz.filter_invalid(flt) or wrong_vector or degenerate
        else set(),
    )
    assert got in allowed, (got, allowed)
    if got == "ok":
        SUCCESSES["test_sql_search_vector"] += 1
        assert values is not None
        _check_ranked(rows, top_k, fuzz_db.chunk_ids[collection])
        assert all(r[3] is not None for r in rows)  # document id
        distances = [r[2] for r in rows]
        assert all(math.isfinite(d) for d in distances), values
        assert distances == sorted(distances)


HYBRID_SQL = (
    "SELECT fused_rank, chunk_id, document_id, content, vector_rank, vector_distance,"
    " keyword_rank, keyword_score, fused_score FROM hybridsearch.search_hybrid("
    "%s, %s::vector, %s, %s::integer, %s, %s, %s::integer, %s::float8, %s::float8)"
)


@given(
    collection=fz.collection_names,
    values=st.one_of(st.none(), fz.vector_values),
    query=st.one_of(st.none(), fz.queries),
    top_k=fz.top_ks,
    flt=fz.sql_filters,
    fusion=fz.fusions,
    rrf_k=fz.rrf_ks,
    vector_weight=fz.weights,
    keyword_weight=fz.weights,
)
@fuzz_settings("test_sql_search_hybrid")
def test_sql_search_hybrid(
    fuzz_db: FuzzDB,
    unchanged: None,
    collection: str,
    values: list[float] | None,
    query: str | None,
    top_k: Any,
    flt: Any,
    fusion: str | None,
    rrf_k: int | None,
    vector_weight: float | None,
    keyword_weight: float | None,
) -> None:
    CASES["test_sql_search_hybrid"] += 1
    text = None if values is None else fz.vector_text(values)
    params = (collection, text, query, top_k, flt, fusion, rrf_k, vector_weight, keyword_weight)
    rows, got = _call(fuzz_db.conn, HYBRID_SQL, params)
    # NULL leaves a fusion parameter to the collection (hybridsearch.fusion_defaults), and
    # the fuzz collections keep the declared defaults
    fusion = FUSION.default if fusion is None else fusion
    rrf_k = RRF_K.default if rrf_k is None else rrf_k
    vector_weight = VECTOR_WEIGHT.default if vector_weight is None else vector_weight
    keyword_weight = KEYWORD_WEIGHT.default if keyword_weight is None else keyword_weight
    bad_weight = (
        not VECTOR_WEIGHT.accepts(vector_weight)
        or not KEYWORD_WEIGHT.accepts(keyword_weight)
        or vector_weight == keyword_weight == 0  # every fused score would be 0
    )
    invalid = (
        fz.top_k_invalid(top_k)
        or fz.filter_invalid(flt)
        or (values is not None and len(values) != fz.DIMENSIONS)
        or (
            values is not None
            and _existing(collection)
            and fz.degenerate_vector(values, fz.COLLECTIONS[collection])
        )
        or not FUSION.accepts(fusion)
        or not RRF_K.accepts(rrf_k)
        or bad_weight
    )
    allowed = fz.first_layer(
        fz.client_errors(collection, query, fusion),
        fz.int_param_errors(top_k, rrf_k)
        | (fz.vector_decode_errors(values) if values is not None else set())
        | (fz.json_decode_errors(flt.obj) if flt else set()),
        set() if _existing(collection) else {"P0002"},
        {"22023"} if invalid else set(),
    )
    assert got in allowed, (got, allowed)
    if got != "ok":
        return
    SUCCESSES["test_sql_search_hybrid"] += 1
    _check_ranked([(r[1], r[0]) for r in rows], top_k, fuzz_db.chunk_ids[collection])
    assert all(r[3] is not None and r[2] is not None for r in rows)  # content, document id
    assert all((r[4] is None) == (r[5] is None) for r in rows)
    assert all((r[6] is None) == (r[7] is None) for r in rows)
    if values is None:
        assert all(r[4] is None for r in rows)
    if query is None:
        assert all(r[6] is None for r in rows)
    scores = [r[8] for r in rows]
    assert all(math.isfinite(s) for s in scores), params
    assert all(r[5] is None or math.isfinite(r[5]) for r in rows), params
    assert scores == sorted(scores, reverse=True)


def test_sql_keyword_megabyte_phrase(fuzz_db: FuzzDB) -> None:
    """A megabyte quoted phrase is read up to its first 256 words, not turned into one
    tsvector past PostgreSQL's 1 MB limit (54000)."""
    phrase = '"' + " ".join(f"w{i}" for i in range(150_000))
    rows = fuzz_db.conn.execute(KEYWORD_SQL, ("fz", phrase, 10, None)).fetchall()
    assert rows == []


def test_sql_keyword_long_cjk_run(fuzz_db: FuzzDB) -> None:
    """hybridsearch.cjk_bigrams is linear in a CJK run's length: an unbroken 60,000-character
    run parses well within 3 s (it once took substr(run, i, 2) for every i: quadratic)."""
    with fuzz_db.conn.transaction():
        fuzz_db.conn.execute("SET LOCAL statement_timeout = '3s'")
        rows = fuzz_db.conn.execute(KEYWORD_SQL, ("fz", "数据库" * 20_000, 10, None)).fetchall()
    # the same distinct bigrams (数据 据库 库数) as a short run: the same answer
    short = fuzz_db.conn.execute(KEYWORD_SQL, ("fz", "数据库数据库", 10, None)).fetchall()
    assert rows == short and rows


@pytest.mark.parametrize(
    ("fusion", "rrf_k", "weight"),
    [
        ("rrf", RRF_K.maximum, 1.0),
        ("rrf", 60, 5e-324),
        ("rrf", RRF_K.minimum, VECTOR_WEIGHT.maximum),
        ("weighted", 60, 5e-324),
        ("weighted", 60, VECTOR_WEIGHT.maximum),
    ],
)
def test_sql_fusion_extreme_parameters(
    fuzz_db: FuzzDB, fusion: str, rrf_k: int, weight: float
) -> None:
    """The largest rrf_k, subnormal weights and the largest weight give finite scores, not
    22003 (k + rank is computed in double precision; tiny shares count as 0)."""
    rows = fuzz_db.conn.execute(
        HYBRID_SQL,
        ("fz", fz.vector_text([1.0] * 8), "postgres", 10, None, fusion, rrf_k, weight, 1.0),
    ).fetchall()
    assert rows and all(math.isfinite(r[8]) for r in rows)
