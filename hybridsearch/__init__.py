"""hybridsearch: hybrid vector + keyword search with reranking inside PostgreSQL."""

from hybridsearch.aio import AsyncHybridSearch
from hybridsearch.client import HybridSearch
from hybridsearch.collections import Collection, CollectionSettings, CollectionStats
from hybridsearch.config import Settings
from hybridsearch.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    ConfigurationError,
    DatabaseError,
    DocumentError,
    EmbeddingError,
    FilterError,
    HybridSearchError,
    InvalidInputError,
    ModelError,
    QueryError,
    QueryTimeoutError,
    SchemaNotInstalledError,
)
from hybridsearch.fusion import Fused, fuse
from hybridsearch.ingest import Document, IngestReport
from hybridsearch.models.embedder import Embedder
from hybridsearch.models.reranker import Reranker
from hybridsearch.search import Hit, Scores, SearchResult

__all__ = [
    # service
    "HybridSearch",
    "AsyncHybridSearch",
    "Settings",
    # data
    "Collection",
    "CollectionSettings",
    "CollectionStats",
    "Document",
    "Fused",
    "Hit",
    "IngestReport",
    "Scores",
    "SearchResult",
    # models
    "Embedder",
    "Reranker",
    # fusion reference
    "fuse",
    # errors
    "CollectionExistsError",
    "CollectionNotFoundError",
    "ConfigurationError",
    "DatabaseError",
    "DocumentError",
    "EmbeddingError",
    "FilterError",
    "HybridSearchError",
    "InvalidInputError",
    "ModelError",
    "QueryError",
    "QueryTimeoutError",
    "SchemaNotInstalledError",
]
