"""Collections: a set of documents sharing an embedding model, dimension, distance and analyzer.

What a collection is, its SQL and its validation; :mod:`hybridsearch.db.store` runs them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from psycopg import sql
from psycopg.types.json import Jsonb

from hybridsearch.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    InvalidInputError,
)
from hybridsearch.params import (
    FUSION,
    HNSW_EF_CONSTRUCTION,
    HNSW_EF_SEARCH,
    HNSW_M,
    KEYWORD_WEIGHT,
    RRF_K,
    VECTOR_WEIGHT,
    FusionMethod,
    check_hnsw_build,
    check_weights,
)
from hybridsearch.text.chunking import check_chunk_budget

Distance = Literal["cosine", "l2", "inner_product"]
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")

# SQL run by hybridsearch.db.store (written once in store_async.py).
CREATE_COLLECTION_SQL = """
    SELECT c.*, d.*
    FROM hybridsearch.create_collection(%s, %s, %s, %s, %s, %s, %s, %s) AS c
    CROSS JOIN LATERAL hybridsearch.fusion_defaults(c.settings) AS d
"""
# Every statement that returns a collection returns its row and the fusion it searches
# with where a call names none (hybridsearch.fusion_defaults resolves that, for SQL users
# and for the service alike).
GET_COLLECTION_SQL = """
    SELECT c.*, d.*
    FROM hybridsearch.collections AS c
    CROSS JOIN LATERAL hybridsearch.fusion_defaults(c.settings) AS d
    WHERE c.name = %s
"""
LIST_COLLECTIONS_SQL = """
    SELECT c.name, c.embedding_model, c.dimensions,
           c.settings ->> 'model_choice' AS model_choice,
           (SELECT count(*) FROM hybridsearch.documents d
             WHERE d.collection_id = c.collection_id) AS documents,
           (SELECT count(*) FROM hybridsearch.chunks k
             WHERE k.collection_id = c.collection_id) AS chunks
    FROM hybridsearch.collections c
    ORDER BY c.name
"""
UPDATE_SETTINGS_SQL = """
    WITH updated AS (
        UPDATE hybridsearch.collections SET settings = %s WHERE name = %s RETURNING *
    )
    SELECT u.*, d.*
    FROM updated AS u
    CROSS JOIN LATERAL hybridsearch.fusion_defaults(u.settings) AS d
"""
DROP_COLLECTION_SQL = "SELECT hybridsearch.drop_collection(%s)"
# The HNSW index (sql/api/vector_index.sql).
REBUILD_VECTOR_INDEX_SQL = "SELECT hybridsearch.rebuild_vector_index(%s)"
CALIBRATE_EF_SEARCH_SQL = (
    "SELECT ef_search, recall, mean_ms, chosen FROM hybridsearch.calibrate_ef_search(%s, %s, %s)"
)


@dataclass(frozen=True)
class Calibration:
    """How well each leg reads a collection's text, measured without judgments
    (:mod:`hybridsearch.calibration`), and the fusion weights that follow from it."""

    #: mean reciprocal rank of each sampled chunk's second half among the sample's
    #: second halves, its first half the query: by embedding, and by BM25 on the
    #: collection's analyzer
    vector_mrr: float
    keyword_mrr: float
    vector_weight: float
    keyword_weight: float
    #: chunks sampled, and the collection's chunks when it was measured
    sample: int
    chunks: int


@dataclass(frozen=True)
class CollectionSettings:
    """Per-collection defaults for chunking, prompts and fusion (stored as jsonb); the
    fusion defaults and their bounds are declared in :mod:`hybridsearch.params`.

    A weight left None is the collection's calibrated weight (``calibration``), or 1
    before it is calibrated; a weight set here wins over any calibration.
    """

    chunk_max_tokens: int = 200
    chunk_overlap_tokens: int = 40
    query_prompt: str | None = None
    document_prompt: str | None = None
    fusion: FusionMethod = FUSION.default
    rrf_k: int = RRF_K.default
    vector_weight: float | None = None
    keyword_weight: float | None = None
    #: which embedding model the collection got and why (hybridsearch.models.picker),
    #: recorded when it was created; None for collections created before it was kept
    model_choice: str | None = None
    calibration: Calibration | None = None
    #: the HNSW index's build parameters (used when it is built or rebuilt)
    hnsw_m: int = HNSW_M.default
    hnsw_ef_construction: int = HNSW_EF_CONSTRUCTION.default
    #: what vector searches walk the graph with; None until hybridsearch.calibrate_ef_search
    #: measures the index (then searches use HNSW_EF_SEARCH's default)
    hnsw_ef_search: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CollectionSettings:
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        if isinstance(values.get("calibration"), dict):
            values["calibration"] = Calibration(**values["calibration"])
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def sets_weights(self) -> bool:
        """Whether these settings name a fusion weight, which wins over the calibration."""
        return self.vector_weight is not None or self.keyword_weight is not None

    def checked(self) -> CollectionSettings:
        """These settings, or an InvalidInputError naming the first that is out of bounds."""
        check_chunk_budget(self.chunk_max_tokens, self.chunk_overlap_tokens)
        FUSION.check(self.fusion)
        RRF_K.check(self.rrf_k)
        check_hnsw_build(self.hnsw_m, self.hnsw_ef_construction)
        if self.hnsw_ef_search is not None:
            HNSW_EF_SEARCH.check(self.hnsw_ef_search)
        check_weights(
            VECTOR_WEIGHT.default
            if self.vector_weight is None
            else VECTOR_WEIGHT.check(self.vector_weight),
            KEYWORD_WEIGHT.default
            if self.keyword_weight is None
            else KEYWORD_WEIGHT.check(self.keyword_weight),
        )
        return self


@dataclass(frozen=True)
class EfSearchStep:
    """One ef_search value ``hybridsearch.calibrate_ef_search`` tried on a collection's
    HNSW index: the recall@10 it reached against exact search, the mean time of one of
    its queries, and whether it is the value kept."""

    ef_search: int
    recall: float
    mean_ms: float
    chosen: bool


@dataclass(frozen=True)
class FusionDefaults:
    """The fusion a collection searches with where a call names none, as
    ``hybridsearch.fusion_defaults`` resolves it from the collection's settings. Values
    come as stored: a stored value outside today's bounds is refused when used."""

    fusion: str
    rrf_k: int
    vector_weight: float
    keyword_weight: float


@dataclass(frozen=True)
class Collection:
    """A collection as stored in ``hybridsearch.collections``."""

    collection_id: int
    name: str
    embedding_model: str
    dimensions: int
    distance: Distance
    analyzer: str
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    settings: CollectionSettings = field(default_factory=CollectionSettings)
    fusion_defaults: FusionDefaults = field(
        default_factory=lambda: FusionDefaults(
            FUSION.default, RRF_K.default, VECTOR_WEIGHT.default, KEYWORD_WEIGHT.default
        )
    )

    @property
    def partition(self) -> sql.Identifier:
        """The table holding this collection's chunks (a partition of hybridsearch.chunks)."""
        return sql.Identifier("hybridsearch", f"chunks_{self.collection_id}")


@dataclass(frozen=True)
class CollectionStats:
    """A collection with its document and chunk counts (what ``collections list`` shows)."""

    name: str
    model: str
    dimensions: int
    documents: int
    chunks: int
    #: why the collection has its model (see CollectionSettings.model_choice)
    model_choice: str | None = None


def collection_from_row(row: dict[str, Any]) -> Collection:
    return Collection(
        collection_id=row["collection_id"],
        name=row["name"],
        embedding_model=row["embedding_model"],
        dimensions=row["dimensions"],
        distance=row["distance"],
        analyzer=row["analyzer"],
        bm25_k1=row["bm25_k1"],
        bm25_b=row["bm25_b"],
        settings=CollectionSettings.from_json(row["settings"]),
        fusion_defaults=FusionDefaults(
            fusion=row["fusion"],
            rrf_k=row["rrf_k"],
            vector_weight=row["vector_weight"],
            keyword_weight=row["keyword_weight"],
        ),
    )


def stats_from_row(row: dict[str, Any]) -> CollectionStats:
    return CollectionStats(
        name=row["name"],
        model=row["embedding_model"],
        dimensions=row["dimensions"],
        documents=row["documents"],
        chunks=row["chunks"],
        model_choice=row.get("model_choice"),
    )


def not_found_error(name: str) -> CollectionNotFoundError:
    return CollectionNotFoundError(
        f"collection {name!r} does not exist; list collections with "
        "`hybridsearch collections list` or create it first"
    )


def exists_error(name: str) -> CollectionExistsError:
    return CollectionExistsError(
        f"collection {name!r} already exists; drop it first or choose another name"
    )


def validate_name(name: object) -> str:
    """Collection names are 1-63 characters of letters, digits, ``_ . -``."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidInputError(
            f"invalid collection name {name!r}: use 1-63 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_lookup_name(name: object) -> str:
    """A name to look a collection up by: text that PostgreSQL can receive. (Lookups do not
    apply :func:`validate_name`: a SQL user may have created any name.)"""
    if not isinstance(name, str):
        raise InvalidInputError(f"collection name must be a string, got {type(name).__name__}")
    if "\x00" in name:
        raise InvalidInputError(f"collection name {name!r} contains a NUL character")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(
            f"collection name {name!r} is not valid Unicode text (it holds a lone surrogate)"
        ) from None
    return name


def create_arguments(
    name: str,
    *,
    embedding_model: str,
    dimensions: int,
    distance: Distance,
    analyzer: str,
    settings: CollectionSettings | None,
    bm25_k1: float,
    bm25_b: float,
) -> tuple[Any, ...]:
    """Validated parameters for :data:`CREATE_COLLECTION_SQL`."""
    validate_name(name)
    if distance not in ("cosine", "l2", "inner_product"):
        raise InvalidInputError(f"distance must be cosine, l2 or inner_product, got {distance!r}")
    settings = settings or CollectionSettings()
    return (
        name,
        embedding_model,
        dimensions,
        distance,
        analyzer,
        Jsonb(settings.to_json()),
        bm25_k1,
        bm25_b,
    )
