"""Request and response bodies of the HTTP API (:mod:`hybridsearch.server`).

Bounds live here, in the OpenAPI spec, so clients see them; the search and fusion
parameters' bounds come from :mod:`hybridsearch.params`, so this door accepts what the
others do. What hybridsearch itself validates (queries, documents, filters, and rules
that join parameters, such as top_n <= top_k) is left to it, so both doors give one answer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path as PathParam
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from hybridsearch import params
from hybridsearch.collections import NAME_PATTERN, CollectionSettings
from hybridsearch.eval.metrics import DEFAULT_KS
from hybridsearch.eval.pipeline import PipelineConfig, Stage
from hybridsearch.keys import MAX_TENANT_CHARS, Scope
from hybridsearch.models.picker import SAMPLE_DOCUMENTS
from hybridsearch.params import FusionMethod, Mode


def _postgres_text(value: str) -> str:
    """Reject what PostgreSQL text cannot hold, for strings no hybridsearch check sees first."""
    if "\x00" in value:
        raise ValueError("contains a NUL character, which PostgreSQL rejects")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid Unicode (it holds a lone surrogate)") from None
    return value


PostgresText = Annotated[str, AfterValidator(_postgres_text)]

# trec_eval works through every relevance level, so a huge grade stalls it for minutes.
Relevance = Annotated[int, Field(ge=-100, le=100)]


def _bounded(param: params.IntRange[int | None] | params.FloatRange) -> Any:
    """The declared bounds of ``param`` as pydantic constraints (and OpenAPI min/max)."""
    return Field(
        ge=param.minimum,
        le=param.maximum,
        allow_inf_nan=False if isinstance(param, params.FloatRange) else None,
        description=param.description,
    )


TopK = Annotated[int, _bounded(params.TOP_K)]
TopN = Annotated[int, _bounded(params.TOP_N)]
RerankDepth = Annotated[int, _bounded(params.RERANK_DEPTH)]
RrfK = Annotated[int, _bounded(params.RRF_K)]
VectorWeight = Annotated[float, _bounded(params.VECTOR_WEIGHT)]
KeywordWeight = Annotated[float, _bounded(params.KEYWORD_WEIGHT)]
HnswM = Annotated[int, _bounded(params.HNSW_M)]
HnswEfConstruction = Annotated[int, _bounded(params.HNSW_EF_CONSTRUCTION)]
COLLECTION_DEFAULT = "default: the collection's"

Tenant = Annotated[
    PostgresText,
    Field(
        min_length=1,
        max_length=MAX_TENANT_CHARS,
        description="the tenant the request acts for; a tenant-bound API key acts for its "
        "own tenant (omit this or name that one; any other is 403)",
    ),
]

CollectionName = Annotated[
    str, PathParam(pattern=f"^{NAME_PATTERN.pattern}$", description="collection name")
]

KeyId = Annotated[str, PathParam(pattern="^[0-9a-f]{12}$", description="API key id")]


class ErrorBody(BaseModel):
    error: str = Field(description="error class, e.g. CollectionNotFoundError")
    detail: str = Field(description="what was wrong and what to do about it")


class SettingsBody(BaseModel):
    """Collection defaults; omitted fields keep :class:`CollectionSettings` defaults."""

    model_config = ConfigDict(extra="forbid")

    chunk_max_tokens: int | None = Field(default=None, ge=1, le=8192)
    chunk_overlap_tokens: int | None = Field(default=None, ge=0, le=8191)
    query_prompt: str | None = None
    document_prompt: str | None = None
    fusion: FusionMethod | None = None
    rrf_k: RrfK | None = None
    vector_weight: VectorWeight | None = None
    keyword_weight: KeywordWeight | None = None
    hnsw_m: HnswM | None = None
    hnsw_ef_construction: HnswEfConstruction | None = None

    @model_validator(mode="after")
    def _overlap_below_size(self) -> SettingsBody:
        merged = self.to_settings()
        if merged.chunk_overlap_tokens >= merged.chunk_max_tokens:
            raise ValueError(
                f"chunk_overlap_tokens ({merged.chunk_overlap_tokens}) must be smaller than "
                f"chunk_max_tokens ({merged.chunk_max_tokens})"
            )
        params.check_hnsw_build(merged.hnsw_m, merged.hnsw_ef_construction)
        return self

    def to_settings(self) -> CollectionSettings:
        return CollectionSettings(**self.model_dump(exclude_none=True))


class CreateCollectionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=f"^{NAME_PATTERN.pattern}$")
    model: str | None = Field(
        None,
        description="embedding model hub id; default: HYBRIDSEARCH_EMBEDDING_MODEL, else "
        "picked from sample_texts (a Chinese model for CJK text, all-MiniLM-L6-v2 otherwise)",
    )
    sample_texts: list[str] | None = Field(
        None,
        max_length=SAMPLE_DOCUMENTS,
        description="the first documents the collection is for, to pick its model from when "
        "no model is named; omitted: all-MiniLM-L6-v2, chosen without seeing text",
    )
    distance: Literal["cosine", "l2", "inner_product"] = "cosine"
    analyzer: PostgresText = Field("mixed", description="mixed, cjk or a text search configuration")
    bm25_k1: float = Field(1.2, ge=0, le=10)
    bm25_b: float = Field(0.75, ge=0, le=1)
    settings: SettingsBody = Field(default_factory=lambda: SettingsBody())


class DocumentBody(BaseModel):
    id: str = Field(description="your id for the document, unique in the collection")
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class IngestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentBody] = Field(min_length=1, max_length=10_000)
    batch_size: int = Field(64, ge=1, le=1024)
    tenant: Tenant | None = Field(None, description="owner of the documents; default: none")


class DeleteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[PostgresText] = Field(min_length=1, max_length=10_000)
    tenant: Tenant | None = Field(None, description="whose documents; default: no tenant's")


class DeleteResponse(BaseModel):
    deleted: int = Field(description="how many of the ids existed")


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str
    top_k: TopK = params.TOP_K.default
    top_n: TopN = params.TOP_N.default
    mode: Mode = Field(params.MODE.default, description=params.MODE.description)
    filter: dict[str, Any] | None = Field(default=None, description="metadata containment filter")
    rerank: bool = True
    rerank_depth: RerankDepth | None = Field(
        default=None, description=f"{params.RERANK_DEPTH.description}; default: all of TopK"
    )
    one_per_document: bool = Field(
        params.ONE_PER_DOCUMENT, description="TopN holds each document's best chunk only"
    )
    fusion: FusionMethod | None = Field(
        default=None, description=f"{params.FUSION.description}; {COLLECTION_DEFAULT}"
    )
    rrf_k: RrfK | None = Field(default=None, description=COLLECTION_DEFAULT)
    vector_weight: VectorWeight | None = Field(default=None, description=COLLECTION_DEFAULT)
    keyword_weight: KeywordWeight | None = Field(default=None, description=COLLECTION_DEFAULT)
    tenant: Tenant | None = Field(None, description="search one tenant's documents only")


class ScoresBody(BaseModel):
    vector_rank: int | None
    vector_distance: float | None
    keyword_rank: int | None
    keyword_score: float | None
    fused: float
    rerank: float | None


class HitBody(BaseModel):
    rank: int
    document_id: str
    chunk_id: int
    text: str
    snippet: str | None = Field(
        description="passages of the text around the query's matches, each match in "
        "<mark> (hybridsearch.highlight); the text's start when the query has no terms"
    )
    metadata: dict[str, Any]
    scores: ScoresBody


class SearchResponse(BaseModel):
    """The JSON of :meth:`SearchResult.to_dict`, as printed by ``search --json``."""

    query: str
    results: list[HitBody]
    reranked: bool
    rerank_depth: int | None = Field(
        description="how many fused candidates the reranker scored (the first ones); "
        "null when the results are not reranked"
    )
    timings_ms: dict[str, float]


class EvalBody(BaseModel):
    """Judged queries and search parameters; omitted parameters take the eval defaults."""

    model_config = ConfigDict(extra="forbid")

    queries: dict[str, str] = Field(min_length=1, max_length=10_000, description="id → text")
    qrels: dict[str, dict[str, Relevance]] = Field(
        min_length=1, description="query id → document id → relevance grade"
    )
    stages: list[Stage] = Field(["vector", "keyword", "hybrid"], min_length=1, max_length=4)
    ks: list[Annotated[int, Field(ge=1, le=params.TOP_K.maximum)]] = Field(
        list(DEFAULT_KS), min_length=1, max_length=20, description="metric cutoffs"
    )
    top_k: TopK | None = None
    top_n: TopN | None = None
    rerank_depth: RerankDepth | None = Field(default=None, description="fused candidates reranked")
    fusion: FusionMethod | None = None
    rrf_k: RrfK | None = None
    vector_weight: VectorWeight | None = None
    keyword_weight: KeywordWeight | None = None

    def to_config(self) -> PipelineConfig:
        return PipelineConfig(
            **self.model_dump(exclude={"queries", "qrels", "stages", "ks"}, exclude_none=True)
        )


class EvalResponse(BaseModel):
    """:meth:`PipelineEvaluation.to_dict`: mean metrics per stage over the judged queries."""

    queries: int = Field(description="judged queries scored")
    skipped: int = Field(description="queries without a relevant judgment")
    stages: dict[str, dict[str, float]]
    config: dict[str, Any]
    timings_s: dict[str, float]
    input: dict[str, Any] = Field(
        default_factory=dict,
        description="what was left out of the input: skipped queries and judgments per"
        " reason, judged documents the collection lacks",
    )


class Health(BaseModel):
    status: str
    revision: str | None = None


class CreateKeyBody(BaseModel):
    """``hybridsearch keys create`` over HTTP; the key in the answer is shown only once."""

    model_config = ConfigDict(extra="forbid")

    scope: Scope
    tenant: Tenant | None = Field(None, description="bind the key to this tenant")
    collections: list[Annotated[str, Field(pattern=f"^{NAME_PATTERN.pattern}$")]] | None = Field(
        None, min_length=1, max_length=1000, description="default: every collection"
    )
    expires_at: AwareDatetime | None = Field(None, description="ISO 8601 with a time zone")
    name: PostgresText | None = Field(None, max_length=200, description="what the key is for")


class KeyBody(BaseModel):
    """An API key's grants (:meth:`hybridsearch.keys.ApiKey.to_dict`), never its secret."""

    key_id: str
    scope: Scope
    tenant: str | None
    collections: list[str] | None
    name: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class CreatedKeyBody(KeyBody):
    key: str = Field(description="the API key; only its salted hash is stored")
