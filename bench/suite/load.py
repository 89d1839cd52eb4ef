"""Ingest against COPY: our write path and a bare COPY BINARY, batch by batch.

Ours is ``hybridsearch.ingest.ingest_embedded`` (documents upsert, COPY BINARY into a
staging table, INSERT into the collection's partition with the analyzer; the partition
keeps its HNSW, GIN and btree indexes and the BM25 statistics triggers). The baseline
is COPY BINARY into a bare table with the same stored columns, its tsvector a generated
column under the same text search configuration, no indexes and no triggers. Both get
the same rows in the same batches, one transaction per batch, alternating which goes
first; only the database write is timed (generating the batch is not).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from hybridsearch.collections import Collection, CollectionSettings, create_collection
from hybridsearch.ingest import Document, PreparedDocument, content_hash, ingest_embedded

from . import data

ANALYZER = "english"
#: Chunks carry random vectors, but queries in the end-to-end figure embed with this.
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BARE_TABLE = sql.Identifier("hybridsearch_bench", "bare_chunks")
CREATE_BARE = sql.SQL(
    """
    CREATE TABLE {} (
        collection_id integer NOT NULL,
        chunk_id      bigint NOT NULL,
        document_id   bigint NOT NULL,
        tenant_id     text NOT NULL DEFAULT '',
        ordinal       integer NOT NULL,
        content       text NOT NULL,
        metadata      jsonb NOT NULL,
        embedding     vector({}) NOT NULL,
        fts           tsvector NOT NULL
                      GENERATED ALWAYS AS (to_tsvector({}::regconfig, content)) STORED
    )
    """
)
COPY_BARE = sql.SQL(
    "COPY {} (collection_id, chunk_id, document_id, ordinal, content, metadata, embedding)"
    " FROM STDIN WITH (FORMAT BINARY)"
)
BARE_TYPES = ["int4", "int8", "int8", "int4", "text", "jsonb", "vector"]


@dataclass
class LoadResult:
    chunks: int
    ours_s: float
    copy_s: float
    analyze_s: float


def partition(collection: Collection) -> sql.Identifier:
    return sql.Identifier("hybridsearch", f"chunks_{collection.collection_id}")


def fresh_collection(conn: psycopg.Connection, name: str) -> Collection:
    """Drop ``name`` and the bare table if a previous run left them; create both anew."""
    conn.execute("SELECT hybridsearch.drop_collection(%s)", (name,))
    conn.execute("DROP SCHEMA IF EXISTS hybridsearch_bench CASCADE")
    conn.execute("CREATE SCHEMA hybridsearch_bench")
    conn.execute(
        CREATE_BARE.format(BARE_TABLE, sql.Literal(data.DIMENSIONS), sql.Literal(ANALYZER))
    )
    collection = create_collection(
        conn,
        name,
        embedding_model=EMBEDDING_MODEL,
        dimensions=data.DIMENSIONS,
        distance="cosine",
        analyzer=ANALYZER,
        settings=CollectionSettings(),
    )
    conn.commit()
    return collection


def _prepared(collection: Collection, batch: data.Batch) -> list[PreparedDocument]:
    prepared = []
    for offset, chunks in enumerate(batch.texts):
        number = batch.first_document + offset
        document = Document(f"doc-{number}", "\n".join(chunks), data.metadata(number))
        prepared.append(PreparedDocument(document, content_hash(document, collection), chunks))
    return prepared


def _copy_bare(conn: psycopg.Connection, collection: Collection, batch: data.Batch) -> None:
    with conn.transaction(), conn.cursor() as cur, cur.copy(COPY_BARE.format(BARE_TABLE)) as copy:
        copy.set_types(BARE_TYPES)
        row = 0
        for offset, chunks in enumerate(batch.texts):
            number = batch.first_document + offset
            meta = Jsonb(data.metadata(number))
            for ordinal, text in enumerate(chunks):
                chunk_id = batch.first_chunk + row
                copy.write_row(
                    (
                        collection.collection_id,
                        chunk_id,
                        number,
                        ordinal,
                        text,
                        meta,
                        batch.vectors[row],
                    )
                )
                row += 1


def load(conn: psycopg.Connection, collection: Collection, total: int) -> LoadResult:
    """Write ``total`` chunks both ways; returns the seconds each took."""
    ours = copy = 0.0
    started = time.perf_counter()
    last_report = started
    done = 0
    for i, batch in enumerate(data.batches(total)):
        for label in ("ours", "copy") if i % 2 == 0 else ("copy", "ours"):
            t = time.perf_counter()
            if label == "ours":
                # Hashing the document is part of our path; it is timed.
                ingest_embedded(conn, collection, _prepared(collection, batch), batch.vectors)
                ours += time.perf_counter() - t
            else:
                _copy_bare(conn, collection, batch)
                copy += time.perf_counter() - t
        done += batch.chunks
        now = time.perf_counter()
        if now - last_report > 15 or done == total:
            last_report = now
            print(
                f"  ingested {done:,}/{total:,} chunks ({now - started:.0f}s;"
                f" ours {ours:.1f}s, copy {copy:.1f}s)",
                flush=True,
            )
    t = time.perf_counter()
    conn.execute(sql.SQL("ANALYZE {}").format(partition(collection)))
    conn.execute(sql.SQL("ANALYZE {}").format(BARE_TABLE))
    conn.commit()
    return LoadResult(done, ours, copy, time.perf_counter() - t)


def sizes(conn: psycopg.Connection, collection: Collection) -> dict[str, int]:
    """Bytes on disk: our partition (heap, TOAST, every index) and the bare table."""
    row = conn.execute(
        "SELECT pg_total_relation_size(%s::regclass), pg_indexes_size(%s::regclass),"
        " pg_total_relation_size('hybridsearch_bench.bare_chunks')",
        (f"hybridsearch.chunks_{collection.collection_id}",) * 2,
    ).fetchone()
    assert row is not None
    return {"ours_total": int(row[0]), "ours_indexes": int(row[1]), "bare_total": int(row[2])}
