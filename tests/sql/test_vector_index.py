"""A collection's HNSW index: its build parameters, its rebuild and its calibrated ef_search.

The collections here are made through SQL, with clustered vectors (the shape text
embeddings have, where HNSW can find true neighbours), so exact neighbours are computed
in Python and the recall the SQL reports can be checked against them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb

from hybridsearch.collections import CollectionSettings
from hybridsearch.errors import InvalidInputError
from hybridsearch.params import (
    HNSW_CALIBRATION_QUERIES,
    HNSW_EF_CONSTRUCTION,
    HNSW_EF_SEARCH,
    HNSW_M,
    HNSW_RANGES,
    HNSW_TARGET_RECALL,
)

DIMENSIONS = 64
CHUNKS = 3_000
K = 10


def _vectors(n: int, seed: int) -> np.ndarray:
    """Unit vectors around 30 cluster centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30, DIMENSIONS))
    v = centres[rng.integers(30, size=n)] + 1.5 * rng.standard_normal((n, DIMENSIONS))
    unit: np.ndarray = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    return unit


def _create(conn: psycopg.Connection, settings: dict[str, int], chunks: int = CHUNKS) -> str:
    """A collection made through SQL with ``settings``, holding ``chunks`` chunks."""
    name = f"hnsw_{uuid.uuid4().hex[:10]}"
    collection_id = conn.execute(
        "SELECT (hybridsearch.create_collection(%s, 'test-model', %s, p_settings => %s))"
        ".collection_id",
        (name, DIMENSIONS, Jsonb(settings)),
    ).fetchone()[0]  # type: ignore[index]
    document_id = conn.execute(
        "INSERT INTO hybridsearch.documents (collection_id, external_id, metadata,"
        " content_hash, chunk_count) VALUES (%s, 'd', '{}', 'h', %s) RETURNING document_id",
        (collection_id, chunks),
    ).fetchone()[0]  # type: ignore[index]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO hybridsearch.chunks (collection_id, document_id, ordinal, content,"
            " metadata, embedding, fts) VALUES (%s, %s, %s, 'x', '{}', %s::vector, '')",
            [
                (collection_id, document_id, i, str(v.tolist()))
                for i, v in enumerate(_vectors(chunks, seed=7))
            ],
        )
    conn.execute(f"ANALYZE hybridsearch.chunks_{collection_id}")  # as after a bulk build
    return name


@pytest.fixture
def sql_conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn
        conn.execute(
            "SELECT hybridsearch.drop_collection(name) FROM hybridsearch.collections"
            " WHERE name LIKE 'hnsw\\_%'"
        )


def _index_options(conn: psycopg.Connection, name: str) -> dict[str, str]:
    row = conn.execute(
        "SELECT c.reloptions FROM pg_catalog.pg_class AS c"
        " JOIN hybridsearch.collections AS k ON c.relname = 'chunks_' || k.collection_id ||"
        " '_embedding_idx' WHERE k.name = %s",
        (name,),
    ).fetchone()
    assert row is not None
    return dict(option.split("=", 1) for option in row[0] or [])


def _exact_recall(conn: psycopg.Connection, name: str, ef_search: int) -> float:
    """The recall@10 of search_vector against numpy's exact neighbours, each of 50 chunks
    the query (itself left out of both lists), at the collection's ef_search."""
    rows = conn.execute(
        "SELECT c.chunk_id, c.embedding::text FROM hybridsearch.chunks AS c"
        " JOIN hybridsearch.collections AS k USING (collection_id) WHERE k.name = %s"
        " ORDER BY c.chunk_id",
        (name,),
    ).fetchall()
    ids = np.array([r[0] for r in rows])
    vectors = np.array([np.array(r[1].strip("[]").split(","), dtype=np.float64) for r in rows])
    conn.execute(
        "UPDATE hybridsearch.collections SET settings = settings || %s WHERE name = %s",
        (Jsonb({"hnsw_ef_search": ef_search}), name),
    )
    hits = 0
    queries = range(0, len(ids), len(ids) // 50)
    conn.execute("SET enable_seqscan = off")  # the HNSW index, as on a large collection
    conn.execute("SET enable_bitmapscan = off")
    for q in queries:
        distances = 1 - vectors @ vectors[q] / np.linalg.norm(vectors, axis=1)
        distances[q] = np.inf
        exact = set(ids[np.argsort(distances, kind="stable")[:K]].tolist())
        found = [
            r[0]
            for r in conn.execute(
                "SELECT chunk_id FROM hybridsearch.search_vector(%s, %s::vector, %s)",
                (name, str(vectors[q].tolist()), K + 1),
            )
            if r[0] != ids[q]
        ]
        hits += len(exact & set(found[:K]))
    conn.execute("RESET enable_seqscan")
    conn.execute("RESET enable_bitmapscan")
    return hits / (len(queries) * K)


def test_calibration_defaults_are_the_declared_ones(sql_conn: psycopg.Connection) -> None:
    arguments = sql_conn.execute(
        "SELECT pg_catalog.pg_get_function_arguments("
        "'hybridsearch.calibrate_ef_search(text, double precision, integer)'::regprocedure)"
    ).fetchone()
    assert arguments is not None
    assert f"p_target_recall double precision DEFAULT {HNSW_TARGET_RECALL.default}" in arguments[0]
    assert f"p_queries integer DEFAULT {HNSW_CALIBRATION_QUERIES.default}" in arguments[0]


def test_sql_defaults_are_the_declared_ones(sql_conn: psycopg.Connection) -> None:
    row = sql_conn.execute("SELECT * FROM hybridsearch.hnsw_settings('{}')").fetchone()
    assert row == (HNSW_M.default, HNSW_EF_CONSTRUCTION.default, HNSW_EF_SEARCH.default)
    settings = CollectionSettings()
    row = sql_conn.execute(
        "SELECT * FROM hybridsearch.hnsw_settings(%s)", (Jsonb(settings.to_json()),)
    ).fetchone()
    assert row == (settings.hnsw_m, settings.hnsw_ef_construction, HNSW_EF_SEARCH.default)


def test_the_index_is_built_with_the_collections_parameters(sql_conn: psycopg.Connection) -> None:
    name = _create(sql_conn, {"hnsw_m": 6, "hnsw_ef_construction": 24}, chunks=50)
    assert _index_options(sql_conn, name) == {"m": "6", "ef_construction": "24"}
    plain = _create(sql_conn, {}, chunks=50)
    assert _index_options(sql_conn, plain) == {
        "m": str(HNSW_M.default),
        "ef_construction": str(HNSW_EF_CONSTRUCTION.default),
    }


def test_rebuild_takes_new_parameters_and_keeps_every_chunk(sql_conn: psycopg.Connection) -> None:
    name = _create(sql_conn, {"hnsw_m": 4, "hnsw_ef_construction": 8}, chunks=500)
    before = sql_conn.execute(
        "SELECT count(*) FROM hybridsearch.chunks c JOIN hybridsearch.collections k"
        " USING (collection_id) WHERE k.name = %s",
        (name,),
    ).fetchone()
    sql_conn.execute(
        "UPDATE hybridsearch.collections SET settings = settings || %s WHERE name = %s",
        (Jsonb({"hnsw_m": 12, "hnsw_ef_construction": 48}), name),
    )
    sql_conn.execute(
        "UPDATE hybridsearch.collections SET settings = settings - 'hnsw_ef_search'"
        " WHERE name = %s",
        (name,),
    )
    ef_search = sql_conn.execute("SELECT hybridsearch.rebuild_vector_index(%s)", (name,)).fetchone()
    assert _index_options(sql_conn, name) == {"m": "12", "ef_construction": "48"}
    # calibrated after the build
    assert (
        ef_search
        == sql_conn.execute(
            "SELECT (settings ->> 'hnsw_ef_search')::integer FROM hybridsearch.collections"
            " WHERE name = %s",
            (name,),
        ).fetchone()
    )
    assert ef_search is not None and ef_search[0] is not None
    after = sql_conn.execute(
        "SELECT count(*) FROM hybridsearch.chunks c JOIN hybridsearch.collections k"
        " USING (collection_id) WHERE k.name = %s",
        (name,),
    ).fetchone()
    assert after == before


def test_calibration_keeps_the_smallest_ef_search_that_reaches_the_target(
    sql_conn: psycopg.Connection,
) -> None:
    # A poor graph (4 links a node), so low ef_search values miss true neighbours.
    name = _create(sql_conn, {"hnsw_m": 4, "hnsw_ef_construction": 8})
    rows = sql_conn.execute(
        "SELECT ef_search, recall, mean_ms, chosen"
        " FROM hybridsearch.calibrate_ef_search(%s, 0.85, 50)",
        (name,),
    ).fetchall()
    efs = [r[0] for r in rows]
    assert efs == sorted(efs) and efs[0] == 40
    assert [r[3] for r in rows] == [False] * (len(rows) - 1) + [True]
    assert all(r[1] < 0.85 for r in rows[:-1]) and rows[-1][1] >= 0.85
    assert len(rows) > 1, "the poor graph should need more than pgvector's default"
    stored = sql_conn.execute(
        "SELECT (settings ->> 'hnsw_ef_search')::int FROM hybridsearch.collections WHERE name = %s",
        (name,),
    ).fetchone()
    assert stored == (rows[-1][0],)
    # What search_vector finds at each measured ef_search agrees with the calibration's
    # recall (its own sample of queries, so within sampling error), and grows with it.
    first, chosen = _exact_recall(sql_conn, name, efs[0]), _exact_recall(sql_conn, name, efs[-1])
    assert first < chosen
    assert abs(chosen - rows[-1][1]) < 0.1 and abs(first - rows[0][1]) < 0.15


def test_a_target_of_zero_keeps_the_first_value(sql_conn: psycopg.Connection) -> None:
    name = _create(sql_conn, {}, chunks=200)
    rows = sql_conn.execute(
        "SELECT ef_search, chosen FROM hybridsearch.calibrate_ef_search(%s, 0, 10)", (name,)
    ).fetchall()
    assert rows == [(40, True)]


def test_a_collection_too_small_to_measure_is_left_alone(sql_conn: psycopg.Connection) -> None:
    name = _create(sql_conn, {}, chunks=K)
    assert (
        sql_conn.execute("SELECT * FROM hybridsearch.calibrate_ef_search(%s)", (name,)).fetchall()
        == []
    )
    assert sql_conn.execute(
        "SELECT settings ? 'hnsw_ef_search' FROM hybridsearch.collections WHERE name = %s",
        (name,),
    ).fetchone() == (False,)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((1.5, 10), "target_recall must be a finite number between 0 and 1, got 1.5"),
        ((None, 10), "target_recall must be a finite number between 0 and 1, got NULL"),
        ((0.9, 0), "queries must be an integer between 1 and 10000, got 0"),
    ],
)
def test_calibration_refuses_bad_arguments(
    sql_conn: psycopg.Connection, arguments: tuple[float | None, int], message: str
) -> None:
    name = _create(sql_conn, {}, chunks=20)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        sql_conn.execute(
            "SELECT * FROM hybridsearch.calibrate_ef_search(%s, %s, %s)", (name, *arguments)
        )
    with pytest.raises(psycopg.errors.NoDataFound, match="does not exist"):
        sql_conn.execute("SELECT * FROM hybridsearch.calibrate_ef_search('hnsw_missing')")


@pytest.mark.parametrize("param", HNSW_RANGES, ids=lambda p: p.name)
def test_settings_out_of_bounds_are_refused_in_python(param: object) -> None:
    for value in (param.minimum - 1, param.maximum + 1):  # type: ignore[attr-defined]
        with pytest.raises(InvalidInputError, match=param.name):  # type: ignore[attr-defined]
            CollectionSettings(**{param.name: value}).checked()  # type: ignore[attr-defined]


def test_ef_construction_below_twice_m_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="at least twice hnsw_m"):
        CollectionSettings(hnsw_m=32, hnsw_ef_construction=40).checked()
    CollectionSettings(hnsw_m=32, hnsw_ef_construction=64).checked()
