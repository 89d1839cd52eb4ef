"""The SQL functions accept exactly what hybridsearch.params declares, with its defaults.

tests/unit/test_params.py holds the Python, CLI and HTTP doors to the same declaration;
here a SQL user's calls of hybridsearch.search_hybrid and hybridsearch.fuse_candidates
meet the same bounds, and what they accept fuses as the Python reference does.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from hybridsearch.fusion import fuse
from hybridsearch.params import (
    FUSION,
    KEYWORD_WEIGHT,
    RRF_K,
    TOP_K,
    VECTOR_WEIGHT,
    FloatRange,
    IntRange,
)

Bounded = IntRange | FloatRange
# The SQL door's ranges: TopK is search_hybrid's p_top_k and fuse_candidates' p_limit.
SQL_RANGES: tuple[Bounded, ...] = (TOP_K, RRF_K, VECTOR_WEIGHT, KEYWORD_WEIGHT)

# (external id, text, 3-d embedding): both legs find every row for "postgres"
ROWS = [
    ("a", "postgres stores vectors", [1.0, 0.0, 0.0]),
    ("b", "postgres and keywords fused", [0.9, 0.1, 0.0]),
    ("c", "postgres postgres keyword search", [0.0, 1.0, 0.0]),
]

HYBRID_SQL = (
    "SELECT chunk_id, fused_rank, fused_score, vector_rank, vector_distance,"
    " keyword_rank, keyword_score FROM hybridsearch.search_hybrid("
    "%s, '[1,0,0]', 'postgres', p_top_k => %s, p_fusion => %s, p_rrf_k => %s,"
    " p_vector_weight => %s, p_keyword_weight => %s)"
)
FUSE_SQL = (
    "SELECT chunk_id, fused_rank, fused_score FROM hybridsearch.fuse_candidates("
    "%s, %s, %s, %s, p_method => %s, p_rrf_k => %s, p_vector_weight => %s,"
    " p_keyword_weight => %s, p_limit => %s)"
)
VECTOR = [(11, 0.1), (12, 0.2), (13, 0.4)]
KEYWORD = [(13, 2.5), (11, 1.0), (14, 0.5)]


@pytest.fixture(scope="module")
def collection(database_url: str) -> Iterator[str]:
    """A 3-d collection holding ROWS, made through SQL only."""
    name = f"params_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        collection_id = conn.execute(
            "SELECT (hybridsearch.create_collection(%s, 'test-model', 3)).collection_id", (name,)
        ).fetchone()[0]
        for external_id, text, embedding in ROWS:
            document_id = conn.execute(
                "INSERT INTO hybridsearch.documents (collection_id, external_id, metadata,"
                " content_hash, chunk_count) VALUES (%s, %s, %s, 'h', 1) RETURNING document_id",
                (collection_id, external_id, Jsonb({})),
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO hybridsearch.chunks (collection_id, document_id, ordinal, content,"
                " metadata, embedding, fts) SELECT %s, %s, 0, %s, '{}', %s::vector,"
                " hybridsearch.document_tsvector('mixed', %s)",
                (collection_id, document_id, text, str(embedding), text),
            )
        yield name
        conn.execute("SELECT hybridsearch.drop_collection(%s)", (name,))


def _cases() -> list[Any]:
    """Each bound and bound ± 1 of every SQL parameter, and whether it is within bounds."""
    cases = []
    for param in SQL_RANGES:
        for value in (
            param.minimum - 1,
            param.minimum,
            param.minimum + 1,
            param.maximum - 1,
            param.maximum,
            param.maximum + 1,
        ):
            ok = param.minimum <= value <= param.maximum
            cases.append(pytest.param(param, value, ok, id=f"{param.name}={value:g}"))
    return cases


def _arguments(param: Bounded, value: float) -> dict[str, Any]:
    """The defaults, with ``param`` set to ``value`` as SQL receives it."""
    arguments: dict[str, Any] = {
        "top_k": TOP_K.default,
        "fusion": FUSION.default,
        "rrf_k": RRF_K.default,
        "vector_weight": VECTOR_WEIGHT.default,
        "keyword_weight": KEYWORD_WEIGHT.default,
    }
    arguments[param.name] = int(value) if isinstance(param, IntRange) else float(value)
    return arguments


def _refusal(param: Bounded) -> str:
    """What the SQL says of a value outside ``param``'s bounds: Python's own words."""
    if param is TOP_K:  # hybridsearch.check_top_k words it without "an integer"
        return f"top_k must be between {TOP_K.minimum} and {TOP_K.maximum}, got"
    return re.escape(f"{param.name} must be {param.expected}, got")


LEGS_SQL = (
    "SELECT array_agg(ARRAY[chunk_id, vector_distance] ORDER BY vector_rank)"
    " FROM hybridsearch.search_vector(%(c)s, '[1,0,0]', %(k)s)"
    " UNION ALL"
    " SELECT array_agg(ARRAY[chunk_id, keyword_score] ORDER BY keyword_rank)"
    " FROM hybridsearch.search_keyword(%(c)s, 'postgres', %(k)s)"
)


def _reference(
    conn: psycopg.Connection, collection: str, arguments: dict[str, Any]
) -> list[tuple[int, float]]:
    """What hybridsearch.fusion.fuse makes of the two legs search_hybrid fuses (whole:
    zscore and weighted read each list's spread, not only the rows fused to the top)."""
    vector, keyword = (
        row[0] or [] for row in conn.execute(LEGS_SQL, {"c": collection, "k": arguments["top_k"]})
    )
    fused = fuse(
        [(int(cid), value) for cid, value in vector],
        [(int(cid), value) for cid, value in keyword],
        method=arguments["fusion"],
        rrf_k=arguments["rrf_k"],
        vector_weight=arguments["vector_weight"],
        keyword_weight=arguments["keyword_weight"],
        limit=arguments["top_k"],
    )
    return [(f.chunk_id, f.fused_score) for f in fused]


@pytest.mark.parametrize("fusion", FUSION.choices)
@pytest.mark.parametrize(("param", "value", "ok"), _cases())
def test_search_hybrid_accepts_exactly_the_declared_range(
    conn: psycopg.Connection, collection: str, fusion: str, param: Bounded, value: float, ok: bool
) -> None:
    arguments = {**_arguments(param, value), "fusion": fusion}
    call = (
        collection,
        arguments["top_k"],
        fusion,
        arguments["rrf_k"],
        arguments["vector_weight"],
        arguments["keyword_weight"],
    )
    if not ok:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=_refusal(param)):
            conn.execute(HYBRID_SQL, call)
        return
    rows = conn.execute(HYBRID_SQL, call).fetchall()
    assert len(rows) == min(len(ROWS), arguments["top_k"])
    expected = _reference(conn, collection, arguments)
    assert [r[0] for r in rows] == [chunk_id for chunk_id, _ in expected]
    for row, (_, score) in zip(rows, expected, strict=True):
        assert row[2] == pytest.approx(score, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(("param", "value", "ok"), _cases())
def test_fuse_candidates_accepts_exactly_the_declared_range(
    conn: psycopg.Connection, param: Bounded, value: float, ok: bool
) -> None:
    arguments = _arguments(param, value)
    call = (
        [c for c, _ in VECTOR],
        [d for _, d in VECTOR],
        [c for c, _ in KEYWORD],
        [s for _, s in KEYWORD],
        arguments["fusion"],
        arguments["rrf_k"],
        arguments["vector_weight"],
        arguments["keyword_weight"],
        arguments["top_k"],
    )
    if not ok:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=_refusal(param)):
            conn.execute(FUSE_SQL, call)
        return
    rows = conn.execute(FUSE_SQL, call).fetchall()
    expected = fuse(
        VECTOR,
        KEYWORD,
        rrf_k=arguments["rrf_k"],
        vector_weight=arguments["vector_weight"],
        keyword_weight=arguments["keyword_weight"],
        limit=arguments["top_k"],
    )
    assert [r[0] for r in rows] == [f.chunk_id for f in expected]
    assert [r[2] for r in rows] == pytest.approx([f.fused_score for f in expected], rel=1e-12)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("fusion", "max", "fusion must be zscore, rrf or weighted, got 'max'"),
        ("fusion", "RRF", "fusion must be zscore, rrf or weighted"),
        ("vector_weight", math.nan, "vector_weight must be a finite number .* got NaN"),
        ("vector_weight", math.inf, "vector_weight must be a finite number .* got Infinity"),
        ("keyword_weight", -math.inf, "keyword_weight must be a finite number .* got -Infinity"),
    ],
)
def test_search_hybrid_refuses_what_no_bound_admits(
    conn: psycopg.Connection, collection: str, name: str, value: Any, message: str
) -> None:
    arguments = {**_arguments(TOP_K, TOP_K.default), name: value}
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        conn.execute(
            HYBRID_SQL,
            (
                collection,
                arguments["top_k"],
                arguments["fusion"],
                arguments["rrf_k"],
                arguments["vector_weight"],
                arguments["keyword_weight"],
            ),
        )


@pytest.mark.parametrize(
    ("position", "message"),
    [
        (4, "fusion must be zscore, rrf or weighted, got NULL"),
        (5, "rrf_k must be an integer between 1 and 100000, got NULL"),
        (7, "keyword_weight must be a finite number .* got NULL"),
    ],
)
def test_fuse_candidates_refuses_null_parameters(
    conn: psycopg.Connection, position: int, message: str
) -> None:
    """search_hybrid reads a NULL as the collection's default; the pure fusion has no
    collection to ask, so a NULL there is a mistake."""
    arguments: list[Any] = [[1], [0.1], [2], [1.0], "zscore", 60, 1.0, 1.0, 10]
    arguments[position] = None
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        conn.execute(FUSE_SQL, arguments)


def test_two_zero_weights_are_refused_one_is_not(conn: psycopg.Connection, collection: str) -> None:
    """Both weights 0 would make every fused score 0 and the order arbitrary."""
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="both 0"):
        conn.execute(HYBRID_SQL, (collection, 10, "rrf", 60, 0.0, 0.0))
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="both 0"):
        conn.execute(FUSE_SQL, ([1], [0.1], [2], [1.0], "weighted", 60, 0.0, -0.0, 10))
    rows = conn.execute(HYBRID_SQL, (collection, 10, "rrf", 60, 0.0, 1.0)).fetchall()
    # the vector leg weighs nothing: the keyword leg's order is the fused order
    assert [r[0] for r in rows] == [r[0] for r in sorted(rows, key=lambda r: r[5])]


def test_search_hybrid_checks_fusion_before_either_leg_runs(
    conn: psycopg.Connection, collection: str
) -> None:
    """A bad fusion parameter is refused even where a leg would have failed first."""
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="rrf_k"):
        conn.execute(
            "SELECT * FROM hybridsearch.search_hybrid(%s, '[1,0]', 'postgres', p_rrf_k => 0)",
            (collection,),
        )


def _sql_defaults(conn: psycopg.Connection, function: str) -> dict[str, Any]:
    """Each defaulted parameter of ``function`` and its default's value."""
    arguments = conn.execute(
        "SELECT pg_catalog.pg_get_function_arguments(%s::regproc)", (function,)
    ).fetchone()[0]
    found = dict(re.findall(r"(p_\w+) [\w ]+? DEFAULT (.+?)(?=, p_|$)", arguments))
    return {
        name: conn.execute(f"SELECT {expression}").fetchone()[0]  # catalogue text, no input
        for name, expression in found.items()
    }


def test_sql_defaults_are_the_declared_ones(conn: psycopg.Connection) -> None:
    declared = {
        "p_rrf_k": RRF_K.default,
        "p_vector_weight": VECTOR_WEIGHT.default,
        "p_keyword_weight": KEYWORD_WEIGHT.default,
    }
    # search_hybrid leaves fusion to the collection (fusion_defaults, whose own defaults
    # test_fusion_defaults_resolve_settings_then_calibration_then_declared_defaults checks)
    assert _sql_defaults(conn, "hybridsearch.search_hybrid") == {
        "p_top_k": TOP_K.default,
        "p_filter": None,
        "p_fusion": None,
        "p_rrf_k": None,
        "p_vector_weight": None,
        "p_keyword_weight": None,
    }
    assert _sql_defaults(conn, "hybridsearch.fuse_candidates") == {
        **declared,
        "p_method": FUSION.default,
        "p_limit": TOP_K.default,
    }
    for leg in ("hybridsearch.search_vector", "hybridsearch.search_keyword"):
        assert _sql_defaults(conn, leg)["p_top_k"] == TOP_K.default


def test_hnsw_ef_search_caps_top_k(conn: psycopg.Connection) -> None:
    """TOP_K's maximum is pgvector's largest hnsw.ef_search (search_vector sets it >= TopK)."""
    conn.execute("SELECT '[1]'::vector")  # loads pgvector, which declares its settings
    limit = conn.execute(
        "SELECT max_val::integer FROM pg_catalog.pg_settings WHERE name = 'hnsw.ef_search'"
    ).fetchone()[0]
    assert limit == TOP_K.maximum


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        # nothing stored: the defaults declared in hybridsearch/params.py
        ({}, (FUSION.default, RRF_K.default, VECTOR_WEIGHT.default, KEYWORD_WEIGHT.default)),
        # a calibration fills the weights the settings leave unset (null or absent)
        (
            {"vector_weight": None, "calibration": {"vector_weight": 0.1, "keyword_weight": 1}},
            (FUSION.default, RRF_K.default, 0.1, 1.0),
        ),
        # weights set in the settings win over the calibration
        (
            {"fusion": "rrf", "rrf_k": 10, "keyword_weight": 0.5,
             "calibration": {"vector_weight": 0.2, "keyword_weight": 1}},
            ("rrf", 10, 0.2, 0.5),
        ),
    ],
)  # fmt: skip
def test_fusion_defaults_resolve_settings_then_calibration_then_declared_defaults(
    conn: psycopg.Connection, settings: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    row = conn.execute(
        "SELECT * FROM hybridsearch.fusion_defaults(%s)", (Jsonb(settings),)
    ).fetchone()
    assert row == expected


def test_search_hybrid_fuses_with_the_collections_defaults_where_a_call_names_none(
    conn: psycopg.Connection, collection: str
) -> None:
    named = (collection, 10, "rrf", 7, 0.25, 1.0)
    conn.execute(
        "UPDATE hybridsearch.collections SET settings = settings || %s WHERE name = %s",
        (Jsonb({"fusion": "rrf", "rrf_k": 7, "vector_weight": 0.25}), collection),
    )
    try:
        unnamed = (collection, 10, None, None, None, None)
        assert conn.execute(HYBRID_SQL, unnamed).fetchall() == (
            conn.execute(HYBRID_SQL, named).fetchall()
        )
    finally:
        conn.execute(
            "UPDATE hybridsearch.collections"
            " SET settings = settings - 'fusion' - 'rrf_k' - 'vector_weight' WHERE name = %s",
            (collection,),
        )
