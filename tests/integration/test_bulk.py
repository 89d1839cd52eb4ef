"""Bulk loads: the search indexes are dropped for the load and rebuilt once after it."""

from __future__ import annotations

import psycopg
import pytest

from hybridsearch import Document, HybridSearch
from hybridsearch.db.store import deferred_indexes, rebuild_indexes
from hybridsearch.errors import CollectionNotFoundError

SUFFIXES = ("_embedding_idx", "_fts_idx", "_impacts_idx", "_metadata_idx")
DOCUMENTS = [
    Document("otters", "Sea otters use stones as tools to crack open shellfish.", {"k": 1}),
    Document("bees", "Honey bees dance to tell the hive where flowers are.", {"k": 2}),
    Document("owls", "Owls turn their heads to watch prey without moving their bodies.", {"k": 1}),
    Document("zh", "向量数据库用于相似度搜索，重排模型提高精度。", {"k": 3}),
]
QUERIES = ["otters stones", "where are the flowers", "向量数据库", "heads of owls"]


def _indexes(conn: psycopg.Connection, collection_id: int) -> set[str]:
    rows = conn.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'hybridsearch' AND tablename = %s",
        (f"chunks_{collection_id}",),
    ).fetchall()
    names = {name for (name,) in rows}
    return {s for s in SUFFIXES if f"chunks_{collection_id}{s}" in names}


def _ranking(hs: HybridSearch, name: str) -> list[list[tuple[str, str]]]:
    out = []
    for query in QUERIES:
        for mode in ("vector", "keyword", "hybrid"):
            result = hs.search(name, query, top_k=4, top_n=4, mode=mode, rerank=False)
            out.append([(mode, hit.document_id) for hit in result.results])
    return out


def test_deferred_indexes_drop_and_rebuild_without_changing_results(
    hs: HybridSearch, collection_name: str, conn: psycopg.Connection
) -> None:
    collection = hs.create_collection(collection_name)
    assert _indexes(conn, collection.collection_id) == set(SUFFIXES)
    hs.add_documents(collection_name, DOCUMENTS[:2])
    indexed = _ranking(hs, collection_name)
    with deferred_indexes(conn, collection):
        assert _indexes(conn, collection.collection_id) == set()
        # Without indexes the searches are exact scans: same answers, only slower.
        assert _ranking(hs, collection_name) == indexed
        hs.add_documents(collection_name, DOCUMENTS[2:])
    assert _indexes(conn, collection.collection_id) == set(SUFFIXES)
    after = _ranking(hs, collection_name)
    assert [hit for ranking in after for hit in ranking if hit[1] in ("owls", "zh")]
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")  # four rows: make the index the choice
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                f"EXPLAIN SELECT chunk_id FROM hybridsearch.chunks_{collection.collection_id}"
                " WHERE impacts && ARRAY['x']"
            ).fetchall()
        )
    assert f"chunks_{collection.collection_id}_impacts_idx" in plan, plan


def test_bulk_add_documents_matches_an_incremental_load(
    hs: HybridSearch, collection_name: str
) -> None:
    other = f"{collection_name}_inc"
    hs.create_collection(collection_name)
    hs.create_collection(other)
    try:
        report = hs.add_documents(collection_name, DOCUMENTS, bulk=True, batch_size=2)
        assert (report.added, report.chunks) == (4, 4)
        hs.add_documents(other, DOCUMENTS, batch_size=2)
        assert _ranking(hs, collection_name) == _ranking(hs, other)
        stats = {s.name: s for s in hs.list_collections()}
        assert stats[collection_name].documents == stats[other].documents == 4
    finally:
        hs.drop_collection(other)


def test_failed_load_still_rebuilds_indexes_and_keeps_committed_batches(
    hs: HybridSearch, collection_name: str, conn: psycopg.Connection
) -> None:
    collection = hs.create_collection(collection_name)

    def documents() -> list[Document]:
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError, match="source broke"), deferred_indexes(conn, collection):
        hs.add_documents(collection_name, DOCUMENTS[:2])
        hs.add_documents(collection_name, documents())
    assert _indexes(conn, collection.collection_id) == set(SUFFIXES)
    hits = hs.search(collection_name, "otters", mode="keyword", rerank=False).results
    assert [h.document_id for h in hits] == ["otters"]


def test_rebuild_is_idempotent_and_restores_an_interrupted_load(
    hs: HybridSearch, collection_name: str, conn: psycopg.Connection
) -> None:
    collection = hs.create_collection(collection_name)
    assert rebuild_indexes(conn, collection) == 0  # nothing missing
    # A load killed between the drop and the rebuild leaves the indexes missing ...
    assert conn.execute(
        "SELECT hybridsearch.drop_chunk_indexes(%s)", (collection_name,)
    ).fetchone() == (4,)
    assert conn.execute(
        "SELECT hybridsearch.drop_chunk_indexes(%s)", (collection_name,)
    ).fetchone() == (0,)
    # ... and one call from SQL brings them back.
    assert conn.execute(
        "SELECT hybridsearch.create_chunk_indexes(%s)", (collection_name,)
    ).fetchone() == (4,)
    assert _indexes(conn, collection.collection_id) == set(SUFFIXES)


def test_unknown_collection_is_a_clear_error(
    hs: HybridSearch, collection_name: str, conn: psycopg.Connection
) -> None:
    collection = hs.create_collection(collection_name)
    hs.drop_collection(collection_name)
    with pytest.raises(CollectionNotFoundError, match=collection_name):
        rebuild_indexes(conn, collection)
    with (
        pytest.raises(CollectionNotFoundError, match=collection_name),
        deferred_indexes(conn, collection),
    ):
        pass
    with pytest.raises(psycopg.errors.NoDataFound):
        conn.execute("SELECT hybridsearch.create_chunk_indexes('no such collection')")
