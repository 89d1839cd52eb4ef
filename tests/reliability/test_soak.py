"""Soak: 4 ingest and 16 query clients at once; nothing lost, nothing half-visible.

HYBRIDSEARCH_SOAK_SECONDS sets the duration (default 60 s, as in CI;
``python bench/reliability.py --long`` runs 10 minutes of the same code).
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest
from psycopg.types.json import Jsonb

from hybridsearch import Document
from hybridsearch.db.store import drop_collection, ingest_documents
from tests.reliability.conftest import record_figure
from tests.reliability.soak import MODES, run_soak
from tests.reliability.support import (
    HashEmbedder,
    connect,
    consistency_problems,
    create_test_collection,
)

SOAK_SECONDS = float(os.environ.get("HYBRIDSEARCH_SOAK_SECONDS", "60"))


@pytest.mark.slow
def test_soak(database_url: str) -> None:
    report = run_soak(database_url, seconds=SOAK_SECONDS)
    record_figure(report.summary())
    assert report.errors == []
    assert report.lost == []
    assert report.half_visible == []
    assert report.final_problems == []
    # the soak did what it claims: every mode ran, writers added, replaced and deleted,
    # and every query client audited snapshots
    assert all(report.latencies_ms[mode] for mode in MODES)
    assert report.added > 0 and report.updated > 0 and report.deleted > 0
    assert report.audits >= report.query_clients


def test_consistency_checks_catch_torn_documents(database_url: str) -> None:
    """The checks the soak and crash tests rely on do fire: a document missing a chunk,
    one mixing chunks of two versions, and drifted BM25 statistics are all reported."""
    with connect(database_url) as conn:
        collection = create_test_collection(conn, f"torn_{uuid.uuid4().hex[:8]}", 4)
        try:
            docs = [
                Document(f"d{i}", "Postgres keeps data. Vectors find it.", {"v": 1})
                for i in range(3)
            ]
            ingest_documents(conn, collection, HashEmbedder(4), docs)
            cid = collection.collection_id
            assert consistency_problems(conn, cid) == []

            conn.execute(
                "DELETE FROM hybridsearch.chunks WHERE chunk_id = (SELECT min(c.chunk_id)"
                " FROM hybridsearch.chunks c JOIN hybridsearch.documents d USING (document_id)"
                " WHERE d.external_id = 'd0' AND c.collection_id = %s)",
                (cid,),
            )
            conn.execute(
                "INSERT INTO hybridsearch.chunks (collection_id, document_id, ordinal, content,"
                " metadata, embedding, fts)"
                " SELECT collection_id, document_id, ordinal + 100, content, %s, embedding, fts"
                " FROM hybridsearch.chunks"
                " WHERE collection_id = %s AND document_id = (SELECT document_id"
                " FROM hybridsearch.documents WHERE collection_id = %s AND external_id = 'd1')"
                " AND ordinal = 0",
                (Jsonb({"v": 2}), cid, cid),
            )
            conn.execute(
                "UPDATE hybridsearch.collection_stats SET chunks = chunks + 1"
                " WHERE collection_id = %s AND shard = (SELECT min(shard)"
                " FROM hybridsearch.collection_stats WHERE collection_id = %s)",
                (cid, cid),
            )
            problems = consistency_problems(conn, cid)
        finally:
            drop_collection(conn, collection.name)
    assert any("'d0'" in p for p in problems)
    assert any("'d1'" in p and "1 chunks of another version" in p for p in problems)
    assert any("BM25 totals drifted" in p for p in problems)
    assert not any("'d2'" in p for p in problems)


def test_hash_embedder_is_deterministic() -> None:
    embedder = HashEmbedder(16)
    a = embedder.embed_documents(["postgres", "vector"])
    assert np.array_equal(a, embedder.embed_documents(["postgres", "vector"]))
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0)
    assert not np.allclose(a[0], a[1])
