"""Ingest embeds batch n+1 while batch n is written, and still behaves batch by batch.

Both doors (``store.ingest_documents`` and the awaited ``store_async`` one) run against the
real database with the packaged MiniLM; the embedders here wrap it to watch or fail calls.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import psycopg
import pytest

from hybridsearch import Document, HybridSearch
from hybridsearch.collections import Collection
from hybridsearch.db import store, store_async
from hybridsearch.db.connection import configure_connection
from hybridsearch.db.connection_async import configure_connection as configure_async
from hybridsearch.errors import DatabaseError, DocumentError
from hybridsearch.ingest import IngestReport
from hybridsearch.models.embedder import Embedder

Door = Literal["sync", "async"]
DOORS: list[Door] = ["sync", "async"]


def _ingest(
    door: Door,
    url: str,
    collection: Collection,
    embedder: Embedder,
    docs: Sequence[Document],
    **options: Any,
) -> IngestReport:
    """``ingest_documents`` through one door, on a connection of its own."""
    if door == "sync":
        with psycopg.connect(url, autocommit=True) as conn:
            configure_connection(conn)
            return store.ingest_documents(conn, collection, embedder, docs, **options)

    async def main() -> IngestReport:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await configure_async(conn)
            return await store_async.ingest_documents(conn, collection, embedder, docs, **options)

    return asyncio.run(main())


def _stored(conn: psycopg.Connection, collection: Collection) -> dict[str, list[str]]:
    """The collection's chunk texts by document id."""
    rows = conn.execute(
        "SELECT d.external_id, k.content FROM hybridsearch.documents d"
        " LEFT JOIN hybridsearch.chunks k USING (collection_id, document_id)"
        " WHERE d.collection_id = %s ORDER BY d.external_id, k.ordinal",
        (collection.collection_id,),
    ).fetchall()
    stored: dict[str, list[str]] = {}
    for external_id, content in rows:
        stored.setdefault(external_id, []).append(content)
    return stored


def _embed_workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("hybridsearch-embed")]


class _Recording(Embedder):
    """The real model; records each call's texts, and runs ``before`` on each call first."""

    def __init__(self, model: str, before: Callable[[list[str]], None] | None = None) -> None:
        super().__init__(model)
        self.before = before
        self.calls: list[list[str]] = []
        self.finished = 0

    def embed_documents(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        items = list(texts)
        self.calls.append(items)
        if self.before is not None:
            self.before(items)
        vectors = super().embed_documents(items)
        self.finished += 1
        return vectors


@pytest.fixture
def unique() -> str:
    """A marker that makes texts new to the embedding cache."""
    return uuid.uuid4().hex[:10]


@pytest.mark.parametrize("door", DOORS)
def test_the_next_batch_is_embedded_while_the_one_before_is_written(
    door: Door, hs: HybridSearch, collection_name: str, database_url: str, unique: str
) -> None:
    """Batch 1's write cannot end before batch 2's embedding has begun, and batch 2's
    embedding goes on only once batch 1's write is under way: they overlap, or the
    write runs into its lock timeout (as it does when embedding and writing alternate).

    A trigger holds batch 1's document insert on an advisory lock that this test holds; the
    embedding of batch 2 waits until the write waits on that lock, then releases it.
    """
    collection = hs.create_collection(collection_name)
    key = 7_100_000 + collection.collection_id
    first, second = f"first {unique}", f"second {unique}"
    docs = [
        Document("1a", f"Otters float on their backs ({first})."),
        Document("1b", f"Beavers build dams of branches ({first})."),
        Document("2a", f"Herons stand still in shallow water ({second})."),
        Document("2b", f"Kingfishers dive for small fish ({second})."),
    ]
    with psycopg.connect(database_url, autocommit=True) as helper:
        helper.execute(
            """
            CREATE FUNCTION pg_temp.hold_write() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM set_config('lock_timeout', '20s', true);
                PERFORM pg_advisory_xact_lock_shared(TG_ARGV[0]::bigint);
                RETURN NEW;
            END $$
            """
        )
        helper.execute(
            "CREATE TRIGGER hold_write BEFORE INSERT ON hybridsearch.documents FOR EACH ROW"
            f" WHEN (NEW.collection_id = {collection.collection_id} AND NEW.external_id = '1a')"
            f" EXECUTE FUNCTION pg_temp.hold_write('{key}')"
        )
        helper.execute("SELECT pg_advisory_lock(%s)", (key,))
        seen: dict[str, float] = {}

        def release_when_batch_one_writes(texts: list[str]) -> None:
            if not any(second in t for t in texts):
                return
            seen["second_embedding_began"] = time.monotonic()
            deadline = time.monotonic() + 20
            waiting = 0
            while not waiting and time.monotonic() < deadline:
                waiting = helper.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                    " AND classid = 0 AND objid = %s AND NOT granted",
                    (key,),
                ).fetchone()[0]  # type: ignore[index]
                time.sleep(0.01)
            if waiting:
                seen["first_write_waited"] = time.monotonic()
            helper.execute("SELECT pg_advisory_unlock(%s)", (key,))

        embedder = _Recording(collection.embedding_model, release_when_batch_one_writes)
        progress: list[tuple[int, float]] = []
        try:
            report = _ingest(
                door,
                database_url,
                collection,
                embedder,
                docs,
                batch_size=2,
                on_progress=lambda n: progress.append((n, time.monotonic())),
            )
        finally:
            helper.execute("SELECT pg_advisory_unlock_all()")
            helper.execute("DROP TRIGGER hold_write ON hybridsearch.documents")
        assert "first_write_waited" in seen, "batch 1 was not written while batch 2 embedded"
        # Batch 1 was stored (its progress reported) after batch 2's embedding began.
        assert progress[0][1] > seen["second_embedding_began"]
        assert [n for n, _ in progress] == [2, 2]
        assert (report.added, report.updated, report.unchanged) == (4, 0, 0)
        assert (report.chunks, report.embedded) == (4, 4)
        assert sorted(_stored(helper, collection)) == ["1a", "1b", "2a", "2b"]
    assert _embed_workers() == []


@pytest.mark.parametrize("door", DOORS)
def test_batches_that_share_ids_or_texts_count_as_one_after_the_other(
    door: Door,
    hs: HybridSearch,
    collection_name: str,
    database_url: str,
    conn: psycopg.Connection,
    unique: str,
) -> None:
    """A batch sees what the batch before it wrote (stored hashes), and takes the vectors
    of texts that batch embeds instead of embedding them again."""
    collection = hs.create_collection(collection_name)
    a1, a2 = f"Alpha, first version {unique}.", f"Alpha, second version {unique}."
    shared = f"A sentence two documents share {unique}."
    docs = [
        Document("a", a1),
        Document("b", f"Bravo {unique}."),
        Document("a", a1),  # batch 2: unchanged, as batch 1 stored it
        Document("c", shared),
        Document("a", a2),  # batch 3: an update of what batch 1 stored
        Document("d", shared),  # the text of c, which batch 2 embeds
        Document("e", f"Echo {unique}."),
    ]
    embedder = _Recording(collection.embedding_model)
    progress: list[int] = []
    report = _ingest(
        door, database_url, collection, embedder, docs, batch_size=2, on_progress=progress.append
    )
    assert (report.added, report.updated, report.unchanged) == (5, 1, 1)
    assert (report.chunks, report.embedded, report.warnings) == (6, 5, [])
    assert progress == [2, 2, 2, 1]
    embedded = [t for call in embedder.calls for t in call]
    assert sorted(embedded) == sorted([a1, f"Bravo {unique}.", shared, a2, f"Echo {unique}."])
    stored = _stored(conn, collection)
    assert stored == {
        "a": [a2],
        "b": [f"Bravo {unique}."],
        "c": [shared],
        "d": [shared],
        "e": [f"Echo {unique}."],
    }
    vectors: dict[str, Any] = dict(
        conn.execute(
            "SELECT d.external_id, k.embedding FROM hybridsearch.chunks k"
            " JOIN hybridsearch.documents d USING (collection_id, document_id)"
            " WHERE d.collection_id = %s AND d.external_id IN ('c', 'd')",
            (collection.collection_id,),
        ).fetchall()
    )
    np.testing.assert_array_equal(vectors["c"].to_numpy(), vectors["d"].to_numpy())

    # Again: everything is unchanged, and nothing is embedded.
    again = _ingest(door, database_url, collection, embedder, docs[3:], batch_size=2)
    assert (again.added, again.updated, again.unchanged, again.embedded) == (0, 0, 4, 0)
    assert len(embedder.calls) == 4  # one call per batch with new texts, none now


def _batches_of_two(unique: str, failing: Document) -> list[Document]:
    return [
        Document("1a", f"Stored first {unique}."),
        Document("1b", f"Stored second {unique}."),
        Document("2a", f"Never stored {unique}."),
        failing,
    ]


@pytest.mark.parametrize("door", DOORS)
def test_a_model_error_in_the_next_batch_keeps_the_batches_before(
    door: Door,
    hs: HybridSearch,
    collection_name: str,
    database_url: str,
    conn: psycopg.Connection,
    unique: str,
) -> None:
    collection = hs.create_collection(collection_name)

    def fail(texts: list[str]) -> None:
        if any("MODEL-FAILS" in t for t in texts):
            raise RuntimeError("the model gave up")

    docs = _batches_of_two(unique, Document("2b", f"MODEL-FAILS {unique}."))
    with pytest.raises(RuntimeError, match="the model gave up"):
        _ingest(door, database_url, collection, _Recording(collection.embedding_model, fail), docs)
    assert sorted(_stored(conn, collection)) == []  # one batch of 64: nothing stored
    progress: list[int] = []
    with pytest.raises(RuntimeError, match="the model gave up"):
        _ingest(
            door,
            database_url,
            collection,
            _Recording(collection.embedding_model, fail),
            docs,
            batch_size=2,
            on_progress=progress.append,
        )
    assert progress == [2]
    assert _stored(conn, collection) == {
        "1a": [f"Stored first {unique}."],
        "1b": [f"Stored second {unique}."],
    }
    assert _embed_workers() == []


@pytest.mark.parametrize("door", DOORS)
def test_a_bad_document_in_the_next_batch_keeps_the_batch_before(
    door: Door,
    hs: HybridSearch,
    collection_name: str,
    database_url: str,
    conn: psycopg.Connection,
    unique: str,
) -> None:
    """Batch 1 is still embedding when batch 2 fails to validate: it is written first."""
    collection = hs.create_collection(collection_name)
    embedder = _Recording(collection.embedding_model, lambda texts: time.sleep(0.3))
    docs = _batches_of_two(unique, Document("2b", "   "))
    with pytest.raises(DocumentError, match="no text"):
        _ingest(door, database_url, collection, embedder, docs, batch_size=2)
    assert sorted(_stored(conn, collection)) == ["1a", "1b"]
    assert embedder.finished == 1 and _embed_workers() == []


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("poisoned", ["first", "second"])
def test_a_failed_write_stores_the_batches_before_it_and_nothing_after(
    door: Door,
    poisoned: str,
    hs: HybridSearch,
    collection_name: str,
    database_url: str,
    conn: psycopg.Connection,
    unique: str,
) -> None:
    """A write that fails rolls its batch back; a batch being embedded meanwhile is never
    written, and its embedding has ended by the time the error reaches the caller."""
    collection = hs.create_collection(collection_name)
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
    docs = [
        Document("1a", f"First batch {unique}."),
        Document("1b", f"First batch, {'POISON' if poisoned == 'first' else 'fine'} {unique}."),
        Document("2a", f"Second batch {unique}."),
        Document("2b", f"Second batch, POISON {unique}."),
        Document("3a", f"Third batch {unique}."),
    ]
    # Slow embeddings after the first: batch 2 is still embedding when batch 1 fails.
    embedder = _Recording(
        collection.embedding_model,
        lambda texts: time.sleep(0.5) if not any("First" in t for t in texts) else None,
    )
    try:
        with pytest.raises(DatabaseError, match="injected failure"):
            _ingest(door, database_url, collection, embedder, docs, batch_size=2)
    finally:
        conn.execute("DROP TRIGGER poison ON hybridsearch.chunks")
    expected = [] if poisoned == "first" else ["1a", "1b"]
    assert sorted(_stored(conn, collection)) == expected
    assert embedder.finished == len(embedder.calls)  # no embedding outlives the call
    assert _embed_workers() == []
