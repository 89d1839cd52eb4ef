"""The HNSW index through the Python API: build parameters at creation, a rebuild with new
ones, calibration of ef_search (by hand and after a bulk load), and what bad input does."""

from __future__ import annotations

import json
import subprocess

import httpx
import psycopg
import pytest

from hybridsearch import CollectionSettings, Document, HybridSearch
from hybridsearch.config import Settings
from hybridsearch.errors import CollectionNotFoundError, InvalidInputError
from hybridsearch.params import HNSW_EF_CONSTRUCTION, HNSW_M
from tests.cli_support import cli_env, run_cli

DOCUMENTS = [
    Document(f"d{i}", f"note {i} about {topic} and {other}")
    for i, (topic, other) in enumerate(
        (t, o)
        for t in ("otters", "bees", "owls", "granite", "tides", "ferns", "comets", "salt")
        for o in ("rivers", "glass", "wool", "copper", "maps", "bread")
    )
]


def _index_options(conn: psycopg.Connection, collection_id: int) -> dict[str, str]:
    row = conn.execute(
        "SELECT reloptions FROM pg_catalog.pg_class WHERE relname = %s",
        (f"chunks_{collection_id}_embedding_idx",),
    ).fetchone()
    assert row is not None
    return dict(option.split("=", 1) for option in row[0] or [])


def test_build_parameters_from_creation_to_rebuild(
    hs: HybridSearch, collection_name: str, conn: psycopg.Connection
) -> None:
    settings = CollectionSettings(hnsw_m=8, hnsw_ef_construction=32)
    created = hs.create_collection(collection_name, settings=settings)
    assert _index_options(conn, created.collection_id) == {"m": "8", "ef_construction": "32"}
    hs.add_documents(collection_name, DOCUMENTS)
    before = [h.document_id for h in hs.search(collection_name, "otters", rerank=False).results]

    rebuilt = hs.rebuild_vector_index(collection_name, m=12, ef_construction=48)
    assert (rebuilt.settings.hnsw_m, rebuilt.settings.hnsw_ef_construction) == (12, 48)
    assert _index_options(conn, created.collection_id) == {"m": "12", "ef_construction": "48"}
    assert rebuilt.settings.hnsw_ef_search is not None  # calibrated after the build
    after = [h.document_id for h in hs.search(collection_name, "otters", rerank=False).results]
    assert after == before  # 48 chunks: the graph finds them all either way


def test_calibration_reports_each_value_tried_and_keeps_the_last(
    hs: HybridSearch, collection_name: str
) -> None:
    hs.create_collection(collection_name)
    hs.add_documents(collection_name, DOCUMENTS)
    steps = hs.calibrate_vector_index(collection_name, target_recall=1.0, queries=20)
    assert steps and steps[-1].chosen and not any(s.chosen for s in steps[:-1])
    assert all(0 <= s.recall <= 1 and s.mean_ms >= 0 for s in steps)
    kept = hs.get_collection(collection_name).settings.hnsw_ef_search
    assert kept == steps[-1].ef_search
    # a later settings update keeps the calibrated value
    hs.update_collection_settings(collection_name, rrf_k=30)
    assert hs.get_collection(collection_name).settings.hnsw_ef_search == kept


def test_a_bulk_load_calibrates_the_new_index(hs: HybridSearch, collection_name: str) -> None:
    hs.create_collection(collection_name)
    assert hs.get_collection(collection_name).settings.hnsw_ef_search is None
    hs.add_documents(collection_name, DOCUMENTS, bulk=True)
    assert hs.get_collection(collection_name).settings.hnsw_ef_search is not None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"m": 1}, "hnsw_m must be an integer between 2 and 100"),
        ({"ef_construction": 2000}, "hnsw_ef_construction must be an integer between"),
        ({"m": 40, "ef_construction": 64}, "at least twice hnsw_m"),
    ],
)
def test_bad_build_parameters_change_nothing(
    hs: HybridSearch,
    collection_name: str,
    conn: psycopg.Connection,
    changes: dict[str, int],
    message: str,
) -> None:
    created = hs.create_collection(collection_name)
    with pytest.raises(InvalidInputError, match=message):
        hs.rebuild_vector_index(collection_name, **changes)
    assert hs.get_collection(collection_name).settings == created.settings
    assert _index_options(conn, created.collection_id) == {
        "m": str(HNSW_M.default),
        "ef_construction": str(HNSW_EF_CONSTRUCTION.default),
    }


def test_bad_calibration_arguments_and_unknown_collections(
    hs: HybridSearch, collection_name: str
) -> None:
    hs.create_collection(collection_name)
    with pytest.raises(InvalidInputError, match="target_recall must be a finite number"):
        hs.calibrate_vector_index(collection_name, target_recall=1.5)
    with pytest.raises(InvalidInputError, match="queries must be an integer between 1 and"):
        hs.calibrate_vector_index(collection_name, queries=0)
    with pytest.raises(CollectionNotFoundError):
        hs.calibrate_vector_index("no_such_collection")
    with pytest.raises(CollectionNotFoundError):
        hs.rebuild_vector_index("no_such_collection")


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(cli_env(database_url), *args)


def test_the_command_line_sets_rebuilds_and_calibrates(
    hs: HybridSearch, collection_name: str, database_url: str
) -> None:
    created = _cli(
        database_url,
        *("collections", "create", collection_name, "--hnsw-m", "8"),
        *("--hnsw-ef-construction", "32"),
    )
    assert created.returncode == 0, created.stderr
    settings = hs.get_collection(collection_name).settings
    assert (settings.hnsw_m, settings.hnsw_ef_construction) == (8, 32)
    hs.add_documents(collection_name, DOCUMENTS)

    reindexed = _cli(database_url, "collections", "reindex", collection_name, "--hnsw-m", "12")
    assert reindexed.returncode == 0, reindexed.stderr
    settings = hs.get_collection(collection_name).settings
    assert (settings.hnsw_m, settings.hnsw_ef_construction) == (12, 32)
    assert f"ef_search {settings.hnsw_ef_search}" in reindexed.stdout

    calibrated = _cli(
        database_url, "collections", "calibrate-index", collection_name, "--json", "--queries", "5"
    )
    assert calibrated.returncode == 0, calibrated.stderr
    steps = json.loads(calibrated.stdout)
    assert steps[-1]["ef_search"] == hs.get_collection(collection_name).settings.hnsw_ef_search

    refused = _cli(database_url, "collections", "reindex", collection_name, "--hnsw-m", "101")
    assert refused.returncode == 2 and "between 2 and 100" in refused.stderr
    assert hs.get_collection(collection_name).settings.hnsw_m == 12


def test_the_http_api_takes_build_parameters_at_creation(
    settings: Settings, collection_name: str, conn: psycopg.Connection
) -> None:
    from tests.integration.test_server import ServerThread

    with ServerThread(settings) as url, httpx.Client(base_url=url, timeout=60) as http:
        refused = http.post(
            "/collections",
            json={"name": collection_name, "settings": {"hnsw_m": 40, "hnsw_ef_construction": 64}},
        )
        assert refused.status_code == 422 and "at least twice hnsw_m" in refused.text
        created = http.post(
            "/collections",
            json={"name": collection_name, "settings": {"hnsw_m": 8, "hnsw_ef_construction": 32}},
        )
        assert created.status_code == 201, created.text
        body = created.json()
    assert (body["settings"]["hnsw_m"], body["settings"]["hnsw_ef_construction"]) == (8, 32)
    assert _index_options(conn, body["collection_id"]) == {"m": "8", "ef_construction": "32"}
