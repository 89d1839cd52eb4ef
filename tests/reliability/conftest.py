"""Reliability fixtures (the fuzz database) and the figures the tests measured.

The figures (soak latency, crash cycles, fuzz case counts, leaked connections, ...)
are what the issue asks to report; they appear in a "hybridsearch reliability figures"
section at the end of the pytest output.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from hybridsearch import Document
from hybridsearch.db import migrate
from hybridsearch.db.store import ingest_documents
from tests.reliability import fuzzing as fz
from tests.reliability.support import (
    HashEmbedder,
    create_database,
    create_test_collection,
    database_fingerprint,
    drop_database,
)

FIGURES: list[str] = []


def record_figure(line: str) -> None:
    """Add one line to the figures section of the test report."""
    FIGURES.append(line)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("hybridsearch reliability figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def fuzz_db(database_url: str) -> Iterator[fz.FuzzDB]:
    """A database of its own for the fuzz tests, with two small collections."""
    name = f"rel_fuzz_{uuid.uuid4().hex[:8]}"
    url = create_database(database_url, name)
    try:
        migrate.upgrade(url)
        db = fz.FuzzDB(url)
        embedder = HashEmbedder(fz.DIMENSIONS)
        for collection_name, distance in fz.COLLECTIONS.items():
            collection = create_test_collection(
                db.conn, collection_name, fz.DIMENSIONS, distance=distance
            )
            docs = [
                Document(
                    f"d{i}",
                    f"{fz.WORDS[i % len(fz.WORDS)]} {fz.STOP_WORDS[i % 12]} postgres chunk {i}.",
                    {"lang": "en" if i % 3 else "de", "n": i, "tags": ["x", "y"][: i % 3]},
                )
                for i in range(40)
            ]
            ingest_documents(db.conn, collection, embedder, docs)
            rows = db.conn.execute(
                "SELECT chunk_id FROM hybridsearch.chunks WHERE collection_id = %s",
                (collection.collection_id,),
            ).fetchall()
            db.chunk_ids[collection_name] = {r[0] for r in rows}
        yield db
        db.conn.close()
    finally:
        drop_database(database_url, name)


@pytest.fixture
def unchanged(fuzz_db: fz.FuzzDB) -> Iterator[None]:
    """The test's cases must leave schema, functions, roles and data as they were."""
    before = database_fingerprint(fuzz_db.conn)
    yield
    assert database_fingerprint(fuzz_db.conn) == before
