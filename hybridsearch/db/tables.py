"""SQLAlchemy typed models of the ``hybridsearch`` tables, and its search functions as tables.

For applications on SQLAlchemy: read collections, documents and chunks with the ORM, and
join search results to their own rows in one query::

    hits = tables.search_hybrid("articles", embedding, "postgres search", top_k=20)
    select(Article, hits.c.fused_score).join(hits, hits.c.document_id == cast(Article.id, Text))

hybridsearch's own migrations create these tables, so the models live on their own
:data:`metadata`, never on an application's: its alembic autogenerate (which compares the
application's ``Base.metadata``, default schema only) neither creates nor drops them.
Write through hybridsearch rather than the ORM: ingest keeps the BM25 statistics exact
and chunks refuse ``UPDATE``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Computed,
    DateTime,
    Double,
    ForeignKeyConstraint,
    Identity,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Text,
    cast,
    column,
    func,
    literal,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.selectable import TableValuedAlias

from hybridsearch.params import (
    TOP_K,
    FusionMethod,
)

SCHEMA = "hybridsearch"

#: hybridsearch's tables only; keep it out of an application's ``target_metadata``.
metadata = MetaData(schema=SCHEMA)


class Base(DeclarativeBase):
    metadata = metadata
    type_annotation_map = {  # noqa: RUF012 (read once by SQLAlchemy, never mutated)
        int: Integer,
        str: Text,
        float: Double,
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
    }


class CollectionRow(Base):
    """``hybridsearch.collections``: one row per collection."""

    __tablename__ = "collections"

    collection_id: Mapped[int] = mapped_column(Identity(always=True), primary_key=True)
    name: Mapped[str] = mapped_column(unique=True)
    embedding_model: Mapped[str]
    dimensions: Mapped[int]
    distance: Mapped[str]
    analyzer: Mapped[str]
    bm25_k1: Mapped[float]
    bm25_b: Mapped[float]
    settings: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class DocumentRow(Base):
    """``hybridsearch.documents``: ``external_id`` is the id the application gave."""

    __tablename__ = "documents"
    __table_args__ = (
        ForeignKeyConstraint(["collection_id"], [CollectionRow.collection_id], ondelete="CASCADE"),
    )

    collection_id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    tenant_id: Mapped[str]
    external_id: Mapped[str]
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    content_hash: Mapped[str]
    chunk_count: Mapped[int]
    updated_at: Mapped[datetime]


class ChunkRow(Base):
    """``hybridsearch.chunks``, partitioned by collection; ``embedding`` has its dimension."""

    __tablename__ = "chunks"
    __table_args__ = (
        ForeignKeyConstraint(
            ["collection_id", "document_id"],
            [DocumentRow.collection_id, DocumentRow.document_id],
            ondelete="CASCADE",
        ),
    )

    collection_id: Mapped[int] = mapped_column(primary_key=True)
    chunk_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    document_id: Mapped[int] = mapped_column(BigInteger)
    tenant_id: Mapped[str]
    ordinal: Mapped[int]
    content: Mapped[str]
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    embedding: Mapped[np.ndarray] = mapped_column(Vector())
    fts: Mapped[str] = mapped_column(TSVECTOR)
    # Generated from fts by the database; read-only here.
    term_freqs: Mapped[dict[str, Any]] = mapped_column(Computed("hybridsearch.term_freqs(fts)"))
    term_count: Mapped[int] = mapped_column(Computed("hybridsearch.term_count(fts)"))
    impacts: Mapped[list[str]] = mapped_column(
        ARRAY(Text(collation="C")), Computed("hybridsearch.impact_keys(fts)")
    )


class CollectionStatsRow(Base):
    """``hybridsearch.collection_stats``: BM25 chunk and term counts, summed over shards."""

    __tablename__ = "collection_stats"
    __table_args__ = (
        ForeignKeyConstraint(["collection_id"], [CollectionRow.collection_id], ondelete="CASCADE"),
    )

    collection_id: Mapped[int] = mapped_column(primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    chunks: Mapped[int] = mapped_column(BigInteger)
    terms: Mapped[int] = mapped_column(BigInteger)
    min_terms: Mapped[int]
    max_terms: Mapped[int]


class TermStatsRow(Base):
    """``hybridsearch.term_stats``: BM25 document frequency per term, summed over shards."""

    __tablename__ = "term_stats"
    __table_args__ = (
        ForeignKeyConstraint(["collection_id"], [CollectionRow.collection_id], ondelete="CASCADE"),
    )

    collection_id: Mapped[int] = mapped_column(primary_key=True)
    term: Mapped[str] = mapped_column(primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    df: Mapped[int] = mapped_column(BigInteger)
    max_tf: Mapped[int]


class EmbeddingCacheRow(Base):
    """``hybridsearch.embedding_cache``: embeddings by model and chunk-text hash."""

    __tablename__ = "embedding_cache"

    model_key: Mapped[str] = mapped_column(primary_key=True)
    text_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    embedding: Mapped[np.ndarray] = mapped_column(Vector())
    created_at: Mapped[datetime]


# -- the search functions as table-valued selectables ---------------------------------------

Embedding = Sequence[float] | np.ndarray


def _vector(embedding: Embedding | None) -> Any:
    return cast(literal(embedding, Vector()), Vector())


def _filter(value: Mapping[str, Any] | None) -> Any:
    # none_as_null: no filter is SQL NULL, not the JSON value null (which the SQL rejects)
    return cast(literal(dict(value) if value else None, JSONB(none_as_null=True)), JSONB)


def search_vector(
    collection: str,
    embedding: Embedding,
    *,
    top_k: int = TOP_K.default,
    filter: Mapping[str, Any] | None = None,
) -> TableValuedAlias:
    """``hybridsearch.search_vector(...)``: the vector TopK, nearest first.

    ``document_id`` is the external id the application indexed the chunk's document under.
    """
    return func.hybridsearch.search_vector(
        literal(collection, Text), _vector(embedding), literal(top_k, Integer), _filter(filter)
    ).table_valued(
        column("chunk_id", BigInteger),
        column("document_id", Text),
        column("vector_rank", Integer),
        column("vector_distance", Double),
        name="vector_hits",
    )


def search_keyword(
    collection: str,
    query: str,
    *,
    top_k: int = TOP_K.default,
    filter: Mapping[str, Any] | None = None,
) -> TableValuedAlias:
    """``hybridsearch.search_keyword(...)``: the BM25 TopK, best first.

    ``document_id`` is the external id the application indexed the chunk's document under.
    """
    return func.hybridsearch.search_keyword(
        literal(collection, Text), literal(query, Text), literal(top_k, Integer), _filter(filter)
    ).table_valued(
        column("chunk_id", BigInteger),
        column("document_id", Text),
        column("keyword_rank", Integer),
        column("keyword_score", Double),
        name="keyword_hits",
    )


def search_hybrid(
    collection: str,
    embedding: Embedding | None,
    query: str | None,
    *,
    top_k: int = TOP_K.default,
    filter: Mapping[str, Any] | None = None,
    fusion: FusionMethod | None = None,
    rrf_k: int | None = None,
    vector_weight: float | None = None,
    keyword_weight: float | None = None,
) -> TableValuedAlias:
    """``hybridsearch.search_hybrid(...)``: the fused TopK with every stage's rank and score.

    ``document_id`` is the external id the application indexed the document under. Pass
    ``embedding=None`` for keyword-only or ``query=None`` for vector-only search. A fusion
    parameter left None is the collection's (``hybridsearch.fusion_defaults``), as in the
    service's search.
    """
    return func.hybridsearch.search_hybrid(
        literal(collection, Text),
        _vector(embedding),
        cast(literal(query, Text), Text),
        literal(top_k, Integer),
        _filter(filter),
        literal(fusion, Text),
        literal(rrf_k, Integer),
        literal(vector_weight, Double),
        literal(keyword_weight, Double),
    ).table_valued(
        column("fused_rank", Integer),
        column("chunk_id", BigInteger),
        column("document_id", Text),
        column("content", Text),
        column("metadata", JSONB),
        column("vector_rank", Integer),
        column("vector_distance", Double),
        column("keyword_rank", Integer),
        column("keyword_score", Double),
        column("fused_score", Double),
        name="hybrid_hits",
    )
