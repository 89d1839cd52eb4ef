"""Ingest: idempotent by content hash, atomic replace, delete, chunking with overlap."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import psycopg
import pytest

from hybridsearch import Document, HybridSearch
from hybridsearch.db.store import ingest_embedded
from hybridsearch.errors import DatabaseError, EmbeddingError, InvalidInputError
from hybridsearch.ingest import PreparedDocument
from hybridsearch.models.embedder import Embedder


def _chunks(conn: psycopg.Connection, collection: str, external_id: str) -> list[tuple[int, str]]:
    return conn.execute(
        "SELECT k.ordinal, k.content FROM hybridsearch.chunks k"
        " JOIN hybridsearch.documents d USING (collection_id, document_id)"
        " JOIN hybridsearch.collections c USING (collection_id)"
        " WHERE c.name = %s AND d.external_id = %s ORDER BY k.ordinal",
        (collection, external_id),
    ).fetchall()


LONG = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(120))


def test_readding_unchanged_documents_is_a_no_op(
    hs: HybridSearch, collection_name: str, conn: psycopg.Connection
) -> None:
    hs.create_collection(collection_name)
    docs = [Document("long", LONG, {"kind": "long"}), Document("short", "One short note.")]
    first = hs.add_documents(collection_name, docs)
    assert (first.added, first.updated, first.unchanged) == (2, 0, 0)
    before = conn.execute(
        "SELECT chunk_id FROM hybridsearch.chunks k JOIN hybridsearch.collections c"
        " USING (collection_id) WHERE c.name = %s ORDER BY chunk_id",
        (collection_name,),
    ).fetchall()
    second = hs.add_documents(collection_name, docs)
    assert (second.added, second.updated, second.unchanged, second.chunks) == (0, 0, 2, 0)
    after = conn.execute(
        "SELECT chunk_id FROM hybridsearch.chunks k JOIN hybridsearch.collections c"
        " USING (collection_id) WHERE c.name = %s ORDER BY chunk_id",
        (collection_name,),
    ).fetchall()
    assert after == before  # same rows, not rewritten
    long_chunks = _chunks(conn, collection_name, "long")
    assert len(long_chunks) > 1
    # consecutive chunks overlap by at least one whole sentence
    first_chunk_last_sentence = long_chunks[0][1].rsplit(".", 2)[-2].strip()
    assert first_chunk_last_sentence in long_chunks[1][1]


def test_changed_document_replaces_its_chunks(
    hs: HybridSearch, collection_name: str, conn: psycopg.Connection
) -> None:
    hs.create_collection(collection_name)
    hs.add_documents(collection_name, [Document("d", LONG)])
    report = hs.add_documents(collection_name, [Document("d", "Completely new text about otters.")])
    assert (report.added, report.updated) == (0, 1)
    assert _chunks(conn, collection_name, "d") == [(0, "Completely new text about otters.")]
    result = hs.search(collection_name, "otters", top_n=1, rerank=False)
    assert result.results[0].document_id == "d"
    assert "otters" in result.results[0].text
    # metadata changes count as changes too
    meta = hs.add_documents(
        collection_name, [Document("d", "Completely new text about otters.", {"v": 2})]
    )
    assert meta.updated == 1
    assert hs.search(collection_name, "otters", filter={"v": 2}, rerank=False).results


class _CorruptLastVector(Embedder):
    """Returns a vector of the wrong size for the last text."""

    def embed_documents(self, texts: list[str]) -> npt.NDArray[np.float32]:  # type: ignore[override]
        good = super().embed_documents(texts)
        return good[:, :-1]


def test_bad_vectors_are_rejected_before_the_cache(
    hs: HybridSearch, collection_name: str, conn: psycopg.Connection
) -> None:
    from hybridsearch.db.store import ingest_documents

    collection = hs.create_collection(collection_name)
    with pytest.raises(EmbeddingError, match="expected"):
        ingest_documents(
            conn,
            collection,
            _CorruptLastVector(collection.embedding_model),
            [Document("x", "A text embedded wrongly, never seen before 8d1f.")],
        )
    cached = conn.execute(
        "SELECT count(*) FROM hybridsearch.embedding_cache e"
        " WHERE e.text_hash = sha256(convert_to(%s, 'UTF8'))",
        ("A text embedded wrongly, never seen before 8d1f.",),
    ).fetchone()[0]
    assert cached == 0


def test_failed_batch_leaves_previous_version_intact(
    hs: HybridSearch, collection_name: str, conn: psycopg.Connection
) -> None:
    """A database failure half-way through a batch rolls the whole batch back."""
    hs.create_collection(collection_name)
    hs.add_documents(collection_name, [Document("keep", LONG)])
    before = _chunks(conn, collection_name, "keep")
    conn.execute(
        """
        CREATE FUNCTION pg_temp.poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.content LIKE '%POISON%' THEN RAISE EXCEPTION 'injected failure'; END IF;
            RETURN NEW;
        END $$
        """
    )
    conn.execute(
        "CREATE TRIGGER poison BEFORE INSERT ON hybridsearch.chunks"
        " FOR EACH ROW EXECUTE FUNCTION pg_temp.poison()"
    )
    try:
        with pytest.raises(DatabaseError, match="injected failure"):
            hs.add_documents(
                collection_name,
                [
                    Document("keep", "A replacement that must not land."),
                    Document("new", "POISON pill."),
                ],
            )
    finally:
        conn.execute("DROP TRIGGER poison ON hybridsearch.chunks")
    assert _chunks(conn, collection_name, "keep") == before
    assert _chunks(conn, collection_name, "new") == []
    count = conn.execute(
        "SELECT count(*) FROM hybridsearch.documents d JOIN hybridsearch.collections c"
        " USING (collection_id) WHERE c.name = %s",
        (collection_name,),
    ).fetchone()[0]
    assert count == 1


class _CountingEmbedder(Embedder):
    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.texts = 0

    def embed_documents(self, texts: list[str]) -> npt.NDArray[np.float32]:  # type: ignore[override]
        self.texts += len(texts)
        return super().embed_documents(texts)


def test_embedding_cache_embeds_each_text_once(
    hs: HybridSearch, collection_name: str, conn: psycopg.Connection
) -> None:
    from hybridsearch.db.store import ingest_documents

    unique = f"cache-{collection_name}"
    docs = [Document("a", f"{unique} first text."), Document("b", f"{unique} second text.")]
    first = hs.create_collection(collection_name)
    counting = _CountingEmbedder(first.embedding_model)
    report = ingest_documents(conn, first, counting, docs)
    assert (report.chunks, report.embedded, counting.texts) == (2, 2, 2)
    # Same corpus, another collection with the same model: nothing is embedded again.
    other = hs.create_collection(collection_name + "_2")
    try:
        again = ingest_documents(conn, other, counting, [*docs, Document("c", f"{unique} new.")])
        assert (again.chunks, again.embedded, counting.texts) == (3, 1, 3)
        hits = hs.search(other.name, f"{unique} second", top_n=1, rerank=False).results
        assert hits[0].document_id == "b"
    finally:
        hs.drop_collection(other.name)


def test_delete_removes_document_and_chunks(
    hs: HybridSearch, collection_name: str, conn: psycopg.Connection
) -> None:
    hs.create_collection(collection_name)
    hs.add_documents(collection_name, [Document("a", "Alpha text."), Document("b", "Beta text.")])
    assert hs.delete_documents(collection_name, ["a", "missing"]) == 1
    assert _chunks(conn, collection_name, "a") == []
    hits = hs.search(collection_name, "alpha text", top_k=10, rerank=False).results
    assert [h.document_id for h in hits] == ["b"]
    stats = {s.name: s for s in hs.list_collections()}[collection_name]
    assert (stats.documents, stats.chunks) == (1, 1)


def test_chinese_document_is_chunked_on_chinese_punctuation(
    hs: HybridSearch, collection_name: str, conn: psycopg.Connection
) -> None:
    from hybridsearch.collections import CollectionSettings

    hs.create_collection(
        collection_name, settings=CollectionSettings(chunk_max_tokens=30, chunk_overlap_tokens=10)
    )
    text = "向量数据库用于相似度搜索。" * 3 + "重排模型可以提高精度！" * 3
    hs.add_documents(collection_name, [Document("zh", text)])
    chunks = [c for _, c in _chunks(conn, collection_name, "zh")]
    assert len(chunks) > 1
    assert all(c.endswith(("。", "！")) for c in chunks)


def test_results_carry_highlighted_snippets(hs: HybridSearch, collection_name: str) -> None:
    hs.create_collection(collection_name)
    hs.add_documents(
        collection_name,
        [
            Document("en", "Sea otters use stones as tools to crack open shellfish."),
            Document("zh", "向量数据库用于相似度搜索，重排模型提高精度。"),
        ],
    )
    english = hs.search(collection_name, "otters tools", top_n=1, mode="keyword")
    assert english.results[0].snippet is not None
    assert "<mark>otters</mark>" in english.results[0].snippet
    chinese = hs.search(collection_name, "向量数据库", top_n=1, mode="keyword")
    assert chinese.results[0].document_id == "zh"
    assert "<mark>向量数据库</mark>" in (chinese.results[0].snippet or "")


def test_collection_defaults_drive_search(hs: HybridSearch, collection_name: str) -> None:
    hs.create_collection(collection_name)
    hs.add_documents(collection_name, [Document("a", "Alpha beta."), Document("b", "Gamma.")])
    updated = hs.update_collection_settings(collection_name, fusion="weighted", rrf_k=10)
    assert (updated.settings.fusion, updated.settings.rrf_k) == ("weighted", 10)
    assert hs.get_collection(collection_name).settings.fusion == "weighted"
    result = hs.search(collection_name, "alpha", top_k=2, top_n=2, rerank=False)
    # weighted fusion: the chunk best in both branches normalises to 1 + 1
    assert result.results[0].document_id == "a"
    assert result.results[0].scores.fused == pytest.approx(2.0)
    with pytest.raises(TypeError):
        hs.update_collection_settings(collection_name, no_such_setting=1)
    with pytest.raises(InvalidInputError, match="rrf_k must be"):
        hs.update_collection_settings(collection_name, rrf_k=0)
    assert hs.get_collection(collection_name).settings == updated.settings  # nothing stored


def test_ingest_embedded_writes_caller_vectors_and_checks_their_shape(
    hs: HybridSearch, collection_name: str, conn: psycopg.Connection
) -> None:
    """Bulk loads that bring their own vectors go through the same write path."""
    collection = hs.create_collection(collection_name)
    prepared = [
        PreparedDocument(Document("a", "Otters hold hands."), "h-a", ["Otters hold hands."]),
        PreparedDocument(Document("b", "Two chunks. Here."), "h-b", ["Two chunks.", "Here."]),
    ]
    vectors = np.random.default_rng(3).standard_normal((3, collection.dimensions))
    with pytest.raises(EmbeddingError, match=r"shape \(3, "):
        ingest_embedded(conn, collection, prepared, vectors[:2])
    assert _chunks(conn, collection_name, "a") == []  # nothing written

    report = ingest_embedded(conn, collection, prepared, vectors.astype(np.float32))
    assert (report.added, report.updated, report.chunks) == (2, 0, 3)
    assert [c for _, c in _chunks(conn, collection_name, "b")] == ["Two chunks.", "Here."]
    stored = conn.execute(
        "SELECT k.embedding FROM hybridsearch.chunks k"
        " JOIN hybridsearch.documents d USING (collection_id, document_id)"
        " WHERE d.collection_id = %s AND d.external_id = 'a'",
        (collection.collection_id,),
    ).fetchone()[0]  # type: ignore[index]
    np.testing.assert_allclose(stored.to_numpy(), vectors[0], rtol=1e-6)
    hits = hs.search(collection_name, "otters", mode="keyword", rerank=False).results
    assert hits and hits[0].document_id == "a"
