"""Shared fixtures: a real PostgreSQL with pgvector (embedded by default) and real models.

Set HYBRIDSEARCH_TEST_DSN to run against another server; the suite installs the schema
there and creates uniquely named collections, dropping them afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # prove that nothing downloads
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from hybridsearch import HybridSearch, Settings
from hybridsearch.db import migrate
from hybridsearch.db.embedded import embedded_database_url, stop_embedded_server

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "scifact"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """URL of a database with the hybridsearch schema installed."""
    dsn = os.environ.get("HYBRIDSEARCH_TEST_DSN")
    data_dir = None
    if dsn:
        url = dsn
    else:
        # Not under pytest's basetemp: pytest deletes old basetemps when another session
        # starts, which would pull the data directory from under a running server.
        data_dir = Path(tempfile.mkdtemp(prefix="hybridsearch-test-pg-"))
        url = embedded_database_url(data_dir)
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        pytest.exit(f"cannot reach the test database {url}: {exc}", returncode=3)
    migrate.upgrade(url)
    yield url
    if data_dir is not None:
        stop_embedded_server(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        torch_threads=1,
    )


@pytest.fixture(scope="session")
def hs(settings: Settings) -> Iterator[HybridSearch]:
    """The service API without a reranker."""
    with HybridSearch(settings) as client:
        yield client


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    from pgvector.psycopg import register_vector

    with psycopg.connect(database_url, autocommit=True) as connection:
        register_vector(connection)
        yield connection


@pytest.fixture
def collection_name(hs: HybridSearch) -> Iterator[str]:
    """A fresh, unique collection name; the collection is dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    hs.drop_collection(name)


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    if not (SCIFACT / "corpus.jsonl").exists():
        pytest.exit(f"SciFact data not found at {SCIFACT}; the tests read ../shared/data", 3)
    return SCIFACT


@pytest.fixture(scope="session")
def trained_reranker(scifact_dir: Path) -> Path:
    """A small cross-encoder fine-tuned from the packaged MiniLM on SciFact train pairs.

    Cached in the system temp dir keyed by its training parameters; built in about two
    minutes on 2 cores when absent.
    """
    from tests.model_fixtures import build_test_reranker

    cache = Path(tempfile.gettempdir()) / "hybridsearch-test-reranker"
    return build_test_reranker(cache, scifact_dir)
