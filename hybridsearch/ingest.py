"""Documents → chunks → embeddings → COPY, idempotent by content hash.

Each batch is one transaction: a document and its chunks become visible together or
not at all, and a changed document's old chunks are replaced atomically. A document
whose content hash is unchanged is skipped before anything is embedded.

This module holds the documents, their validation, hashing, chunking plan and SQL;
:func:`hybridsearch.db.store.ingest_documents` runs them on a connection.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
from psycopg.types.json import Jsonb

from hybridsearch.collections import Calibration, Collection
from hybridsearch.errors import DocumentError, EmbeddingError
from hybridsearch.models.embedder import Embedder
from hybridsearch.text.chunking import chunk_text

# Bumped whenever chunking changes in a way that should re-chunk stored documents.
CHUNKER_VERSION = 1

# SQL run by hybridsearch.db.store (written once in store_async.py).
STORED_HASHES_SQL = (
    "SELECT external_id, content_hash FROM hybridsearch.documents"
    " WHERE collection_id = %s AND tenant_id = %s AND external_id = ANY(%s)"
)
UPSERT_DOCUMENTS_SQL = """
    INSERT INTO hybridsearch.documents
        (collection_id, tenant_id, external_id, metadata, content_hash, chunk_count)
    SELECT %s, %s, d.external_id, d.metadata, d.content_hash, d.chunk_count
    FROM unnest(%s::text[], %s::jsonb[], %s::text[], %s::integer[])
         AS d(external_id, metadata, content_hash, chunk_count)
    ON CONFLICT (collection_id, tenant_id, external_id) DO UPDATE
        SET metadata = EXCLUDED.metadata,
            content_hash = EXCLUDED.content_hash,
            chunk_count = EXCLUDED.chunk_count,
            updated_at = now()
    RETURNING external_id, document_id, (xmax = 0) AS inserted
"""
DELETE_CHUNKS_SQL = (
    "DELETE FROM hybridsearch.chunks WHERE collection_id = %s AND document_id = ANY(%s)"
)
CREATE_STAGING_SQL = """
    CREATE TEMPORARY TABLE IF NOT EXISTS hybridsearch_staging (
        document_id bigint, ordinal integer, content text, metadata jsonb, embedding vector
    ) ON COMMIT DELETE ROWS
"""
COPY_STAGING_SQL = (
    "COPY hybridsearch_staging (document_id, ordinal, content, metadata, embedding)"
    " FROM STDIN WITH (FORMAT BINARY)"
)
STAGING_TYPES = ["int8", "int4", "text", "jsonb", "vector"]
# The insert consumes the staging rows it reads: ON COMMIT DELETE ROWS empties the table
# only at commit, and a transaction may write several batches (a sync worker's round
# writes each tenant's documents in a savepoint of one transaction).
INSERT_CHUNKS_SQL = """
    WITH s AS (DELETE FROM hybridsearch_staging RETURNING *)
    INSERT INTO hybridsearch.chunks (collection_id, document_id, tenant_id, ordinal,
                                     content, metadata, embedding, fts)
    SELECT %s, s.document_id, %s, s.ordinal, s.content, s.metadata, s.embedding,
           hybridsearch.document_tsvector(%s, s.content)
    FROM s
"""
DELETE_DOCUMENTS_SQL = (
    "DELETE FROM hybridsearch.documents"
    " WHERE collection_id = %s AND tenant_id = %s AND external_id = ANY(%s)"
)


@dataclass(frozen=True)
class Document:
    """A document to index: ``id`` is the caller's external id, unique per collection."""

    id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class IngestReport:
    """What an ingest did, by document."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    chunks: int = 0
    #: chunks whose embedding had to be computed (the rest came from the cache)
    embedded: int = 0
    #: what the caller should know, one line each: e.g. documents in a script that the
    #: collection's model does not read (see hybridsearch.models.picker.UnreadScripts)
    warnings: list[str] = field(default_factory=list)
    #: the fusion weights measured after this ingest, when the collection was due a
    #: calibration (hybridsearch.calibration)
    calibration: Calibration | None = None

    @property
    def documents(self) -> int:
        return self.added + self.updated + self.unchanged


@dataclass(frozen=True)
class PreparedDocument:
    """A new or changed document, chunked and waiting for its embeddings."""

    document: Document
    content_hash: str
    chunks: list[str]


def validate_document(document: object, max_chars: int) -> Document:
    """Check one document; raises DocumentError saying what is wrong with it."""
    if not isinstance(document, Document):
        raise DocumentError(f"expected a hybridsearch.Document, got {type(document).__name__}")
    if not isinstance(document.id, str) or not document.id.strip():
        raise DocumentError("document id must be a non-empty string")
    label = f"document {document.id[:80]!r}"
    if not isinstance(document.text, str):
        raise DocumentError(f"{label}: text must be a string, got {type(document.text).__name__}")
    if len(document.text) > max_chars:
        raise DocumentError(
            f"{label} has {len(document.text):,} characters; the limit is {max_chars:,}. "
            "Split it into smaller documents or raise HYBRIDSEARCH_MAX_DOCUMENT_CHARS."
        )
    if not document.text.strip():
        raise DocumentError(f"{label} has no text to index")
    for value, what in ((document.id, "id"), (document.text, "text")):
        if "\x00" in value:
            raise DocumentError(
                f"{label}: {what} contains a NUL character, which PostgreSQL rejects"
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise DocumentError(f"{label}: {what} is not valid Unicode (lone surrogate)") from None
    if not isinstance(document.metadata, Mapping):
        raise DocumentError(f"{label}: metadata must be a JSON object (a dict)")
    try:
        _canonical_json(document.metadata)
    except (TypeError, ValueError) as exc:
        raise DocumentError(f"{label}: metadata is not JSON-serialisable: {exc}") from None
    return document


def _canonical_json(value: Mapping[str, Any]) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False)
    if "\\u0000" in text:
        raise ValueError("it contains a NUL character, which PostgreSQL rejects")
    return text


def content_hash(document: Document, collection: Collection) -> str:
    """Hash everything that shapes a document's stored chunks and vectors."""
    s = collection.settings
    h = hashlib.sha256()
    for part in (
        document.text,
        _canonical_json(document.metadata),
        collection.embedding_model,
        s.document_prompt or "",
        f"{CHUNKER_VERSION}:{s.chunk_max_tokens}:{s.chunk_overlap_tokens}",
    ):
        h.update(part.encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()


def batches(items: Iterable[Document], size: int) -> Iterator[list[Document]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def check_dimensions(embedder: Embedder, collection: Collection) -> None:
    """The embedder must produce the collection's dimension (loads the model)."""
    if embedder.dimensions != collection.dimensions:
        raise EmbeddingError(
            f"embedder {embedder.model_id!r} produces {embedder.dimensions} dimensions; "
            f"collection {collection.name!r} expects {collection.dimensions}"
        )


def latest_by_id(batch: Sequence[Document], max_document_chars: int) -> dict[str, Document]:
    """The batch validated, by id; the last occurrence of an id wins, as across batches."""
    return {validate_document(d, max_document_chars).id: d for d in batch}


def plan_batch(
    latest: Mapping[str, Document], stored: Mapping[str, str], collection: Collection
) -> tuple[list[PreparedDocument], int]:
    """The documents to (re)write, chunked, and how many are unchanged (same hash)."""
    settings = collection.settings
    prepared = []
    unchanged = 0
    for document in latest.values():
        digest = content_hash(document, collection)
        if stored.get(document.id) == digest:
            unchanged += 1
            continue
        chunks = chunk_text(
            document.text,
            max_tokens=settings.chunk_max_tokens,
            overlap_tokens=settings.chunk_overlap_tokens,
        )
        prepared.append(PreparedDocument(document, digest, [c.text for c in chunks]))
    return prepared, unchanged


def upsert_params(
    collection: Collection, prepared: Sequence[PreparedDocument], tenant: str
) -> tuple[Any, ...]:
    """Parameters for :data:`UPSERT_DOCUMENTS_SQL`."""
    return (
        collection.collection_id,
        tenant,
        [p.document.id for p in prepared],
        [Jsonb(dict(p.document.metadata)) for p in prepared],
        [p.content_hash for p in prepared],
        [len(p.chunks) for p in prepared],
    )


def staging_rows(
    prepared: Sequence[PreparedDocument], document_ids: Mapping[str, int], embeddings: np.ndarray
) -> Iterator[tuple[Any, ...]]:
    """Rows for :data:`COPY_STAGING_SQL`, one per chunk, in embedding order."""
    row = 0
    for p in prepared:
        metadata = Jsonb(dict(p.document.metadata))
        for ordinal, text in enumerate(p.chunks):
            yield (document_ids[p.document.id], ordinal, text, metadata, embeddings[row])
            row += 1
