"""Ingest against COPY: our write path and a bare COPY BINARY, batch by batch.

Ours is ``hybridsearch.ingest.ingest_embedded`` (documents upsert, COPY BINARY into a
staging table, INSERT into the collection's partition with the analyzer, the BM25
statistics triggers) in two phases:

* **bulk**: the first ``total`` chunks with the search indexes deferred
  (``hybridsearch.db.store.deferred_indexes``), their build at the end timed as ours. The
  HNSW index is built first, on its own, and its time is reported too: pgvector's build
  is a floor under any write path that leaves the vectors searchable;
* **incremental**: a further 2 % written with every index maintained row by row, the
  steady state of a collection that keeps growing.

The baseline is COPY BINARY into a bare table with the same stored columns, its tsvector
a generated column under the same text search configuration, no indexes and no
triggers. Both get the same rows in the same batches, one transaction per batch,
alternating which goes first; only the database write is timed (generating the batch is
not).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from hybridsearch.collections import Collection, CollectionSettings
from hybridsearch.db.store import create_collection, deferred_indexes, ingest_embedded
from hybridsearch.ingest import Document, PreparedDocument, content_hash

from . import data

ANALYZER = "english"
#: Chunks carry synthetic vectors, but queries in the end-to-end figure embed with this.
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
CALIBRATE = "SELECT count(*) FROM hybridsearch.calibrate_ef_search(%s, p_queries => 50)"
HNSW_DEFINITION = (
    "SELECT definition FROM hybridsearch.chunk_index_definitions(%s) WHERE index_name = %s"
)


@dataclass
class LoadResult:
    bulk_chunks: int = 0
    incremental_chunks: int = 0
    #: the bulk phase's writes plus the index build after them
    bulk_ours_s: float = 0.0
    bulk_copy_s: float = 0.0
    index_build_s: float = 0.0
    #: the HNSW index's part of index_build_s
    hnsw_build_s: float = 0.0
    #: its ef_search calibration (hybridsearch.calibrate_ef_search), part of index_build_s
    hnsw_calibration_s: float = 0.0
    incremental_ours_s: float = 0.0
    incremental_copy_s: float = 0.0
    #: ANALYZE of the bare table (ours is analyzed as part of the index build)
    analyze_s: float = 0.0


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


def prepared(collection: Collection, batch: data.Batch) -> list[PreparedDocument]:
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


def _write_both(
    conn: psycopg.Connection, collection: Collection, batch: data.Batch, ours_first: bool
) -> tuple[float, float]:
    """Seconds for our write of ``batch`` and for the bare COPY of it."""
    ours = copy = 0.0
    for label in ("ours", "copy") if ours_first else ("copy", "ours"):
        t = time.perf_counter()
        if label == "ours":
            # Hashing the document is part of our path; it is timed.
            ingest_embedded(conn, collection, prepared(collection, batch), batch.vectors)
            ours = time.perf_counter() - t
        else:
            _copy_bare(conn, collection, batch)
            copy = time.perf_counter() - t
    return ours, copy


def index_name(collection: Collection, suffix: str) -> str:
    """The name of one of the partition's indexes, as ``chunk_index_definitions`` makes it."""
    return f"chunks_{collection.collection_id}{suffix}"


def _build_hnsw(
    conn: psycopg.Connection, collection: Collection, maintenance_work_mem: str
) -> None:
    """Build the partition's HNSW index alone, as ``create_chunk_indexes`` would."""
    name = index_name(collection, "_embedding_idx")
    with conn.transaction():
        conn.execute("SELECT set_config('maintenance_work_mem', %s, true)", (maintenance_work_mem,))
        row = conn.execute(HNSW_DEFINITION, (collection.name, name)).fetchone()
        assert row is not None, f"no index {name} among the collection's search indexes"
        conn.execute(row[0])


def load(
    conn: psycopg.Connection, collection: Collection, total: int, maintenance_work_mem: str
) -> LoadResult:
    """Write ``total`` chunks in bulk, then 2 % more incrementally, both ways."""
    extra = max(total // 50, data.CHUNKS_PER_DOCUMENT * data.DOCUMENTS_PER_BATCH)
    batches = data.batches(total + extra)
    result = LoadResult()
    started = last_report = time.perf_counter()
    done = 0
    with deferred_indexes(conn, collection, maintenance_work_mem=maintenance_work_mem):
        for i, batch in enumerate(batches):
            ours, copy = _write_both(conn, collection, batch, ours_first=i % 2 == 0)
            result.bulk_ours_s += ours
            result.bulk_copy_s += copy
            done += batch.chunks
            result.bulk_chunks = done
            now = time.perf_counter()
            if now - last_report > 15 or done >= total:
                last_report = now
                print(
                    f"  bulk {done:,}/{total:,} chunks ({now - started:.0f}s;"
                    f" ours {result.bulk_ours_s:.1f}s, copy {result.bulk_copy_s:.1f}s)",
                    flush=True,
                )
            if done >= total:
                break
        build_started = time.perf_counter()
        _build_hnsw(conn, collection, maintenance_work_mem)
        result.hnsw_build_s = time.perf_counter() - build_started
        # What create_chunk_indexes does after building a graph, timed on its own.
        calibration_started = time.perf_counter()
        conn.execute(CALIBRATE, (collection.name,))
        result.hnsw_calibration_s = time.perf_counter() - calibration_started
        # Leaving the block builds the other indexes.
    result.index_build_s = time.perf_counter() - build_started
    result.bulk_ours_s += result.index_build_s
    print(f"  index build {result.index_build_s:.1f}s", flush=True)
    for i, batch in enumerate(batches):
        ours, copy = _write_both(conn, collection, batch, ours_first=i % 2 == 0)
        result.incremental_ours_s += ours
        result.incremental_copy_s += copy
        result.incremental_chunks += batch.chunks
    t = time.perf_counter()
    conn.execute(sql.SQL("ANALYZE {}").format(BARE_TABLE))
    result.analyze_s = time.perf_counter() - t
    return result


def sizes(conn: psycopg.Connection, collection: Collection) -> dict[str, int]:
    """Bytes on disk: our partition (heap, TOAST, every index) and the bare table."""
    row = conn.execute(
        "SELECT pg_total_relation_size(%s::regclass), pg_indexes_size(%s::regclass),"
        " pg_total_relation_size('hybridsearch_bench.bare_chunks')",
        (f"hybridsearch.chunks_{collection.collection_id}",) * 2,
    ).fetchone()
    assert row is not None
    return {"ours_total": int(row[0]), "ours_indexes": int(row[1]), "bare_total": int(row[2])}
