"""Request and response bodies of the HTTP API (:mod:`hybridsearch.server`).

Bounds live here, in the OpenAPI spec, so clients see them; what hybridsearch itself
validates (queries, documents, filters) is left to it, so both doors give one answer.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path as PathParam
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from hybridsearch.collections import NAME_PATTERN, CollectionSettings
from hybridsearch.eval.metrics import DEFAULT_KS
from hybridsearch.eval.pipeline import PipelineConfig, Stage
from hybridsearch.search_input import MAX_TOP_K, Mode


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

CollectionName = Annotated[
    str, PathParam(pattern=f"^{NAME_PATTERN.pattern}$", description="collection name")
]


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
    fusion: Literal["rrf", "weighted"] | None = None
    rrf_k: int | None = Field(default=None, ge=1, le=100_000)
    vector_weight: float | None = Field(default=None, ge=0, le=1e6, allow_inf_nan=False)
    keyword_weight: float | None = Field(default=None, ge=0, le=1e6, allow_inf_nan=False)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> SettingsBody:
        merged = self.to_settings()
        if merged.chunk_overlap_tokens >= merged.chunk_max_tokens:
            raise ValueError(
                f"chunk_overlap_tokens ({merged.chunk_overlap_tokens}) must be smaller than "
                f"chunk_max_tokens ({merged.chunk_max_tokens})"
            )
        return self

    def to_settings(self) -> CollectionSettings:
        return CollectionSettings(**self.model_dump(exclude_none=True))


class CreateCollectionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=f"^{NAME_PATTERN.pattern}$")
    model: str | None = Field(
        None, description="embedding model hub id; default: HYBRIDSEARCH_EMBEDDING_MODEL"
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


class DeleteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[PostgresText] = Field(min_length=1, max_length=10_000)


class DeleteResponse(BaseModel):
    deleted: int = Field(description="how many of the ids existed")


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str
    top_k: int = Field(50, ge=1, le=MAX_TOP_K, description="fused candidates (recall)")
    top_n: int = Field(5, ge=1, le=MAX_TOP_K, description="results after reranking")
    mode: Mode = "hybrid"
    filter: dict[str, Any] | None = Field(default=None, description="metadata containment filter")
    rerank: bool = True
    fusion: Literal["rrf", "weighted"] | None = None
    rrf_k: int | None = Field(default=None, ge=1, le=100_000)
    vector_weight: float | None = Field(default=None, ge=0, le=1e6, allow_inf_nan=False)
    keyword_weight: float | None = Field(default=None, ge=0, le=1e6, allow_inf_nan=False)


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
    metadata: dict[str, Any]
    scores: ScoresBody


class SearchResponse(BaseModel):
    """The JSON of :meth:`SearchResult.to_dict`, as printed by ``search --json``."""

    query: str
    results: list[HitBody]
    reranked: bool
    timings_ms: dict[str, float]


class EvalBody(BaseModel):
    """Judged queries and search parameters; omitted parameters take the eval defaults."""

    model_config = ConfigDict(extra="forbid")

    queries: dict[str, str] = Field(min_length=1, max_length=10_000, description="id → text")
    qrels: dict[str, dict[str, Relevance]] = Field(
        min_length=1, description="query id → document id → relevance grade"
    )
    stages: list[Stage] = Field(["vector", "keyword", "hybrid"], min_length=1, max_length=4)
    ks: list[Annotated[int, Field(ge=1, le=MAX_TOP_K)]] = Field(
        list(DEFAULT_KS), min_length=1, max_length=20, description="metric cutoffs"
    )
    top_k: int | None = Field(default=None, ge=1, le=MAX_TOP_K)
    top_n: int | None = Field(default=None, ge=1, le=MAX_TOP_K)
    rerank_depth: int | None = Field(default=None, ge=1, le=MAX_TOP_K)
    fusion: Literal["rrf", "weighted"] | None = None
    rrf_k: int | None = Field(default=None, ge=1, le=100_000)
    vector_weight: float | None = Field(default=None, ge=0, le=1e6, allow_inf_nan=False)
    keyword_weight: float | None = Field(default=None, ge=0, le=1e6, allow_inf_nan=False)

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


class Health(BaseModel):
    status: str
    revision: str | None = None
