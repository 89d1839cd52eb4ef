"""Search arguments, validated: one place for the sync and async clients.

Every check runs before the search SQL, so a bad argument is a precise hybridsearch
error with a message that says what was expected, never a raw psycopg, numpy or
RecursionError, and never a NaN score.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from hybridsearch import params
from hybridsearch.collections import Collection
from hybridsearch.errors import EmbeddingError, FilterError, InvalidInputError, QueryError
from hybridsearch.params import FusionMethod
from hybridsearch.params import Mode as Mode  # re-exported: the clients import it from here

T = TypeVar("T")

#: far deeper than any metadata filter needs, far below Python's recursion limit
MAX_FILTER_DEPTH = 64
#: pgvector computes distances in float32: longer vectors overflow them, and under cosine
#: shorter ones have no distance. hybridsearch.search_vector enforces the same bounds.
MAX_NORM = 1e18
MIN_COSINE_NORM = 1e-18


@dataclass(frozen=True)
class SearchOptions:
    """Validated search parameters."""

    query: str
    top_k: int
    top_n: int
    mode: Mode
    filter: dict[str, Any] | None
    fusion: FusionMethod
    rrf_k: int
    vector_weight: float
    keyword_weight: float
    tenant: str | None = None
    #: fused candidates the reranker scores; None: all of them (params.RERANK_DEPTH)
    rerank_depth: int | None = None
    #: TopN holds one chunk per document, its best (params.ONE_PER_DOCUMENT)
    one_per_document: bool = params.ONE_PER_DOCUMENT


def validate_query(query: object, max_chars: int) -> str:
    """A searchable query string, or a QueryError that says what is wrong with it."""
    if not isinstance(query, str):
        raise QueryError(f"query must be a string, got {type(query).__name__}")
    if len(query) > max_chars:
        raise QueryError(
            f"query has {len(query):,} characters; the limit is {max_chars:,} "
            "(HYBRIDSEARCH_MAX_QUERY_CHARS). Search with the key sentence, not a whole document."
        )
    if not query.strip():
        raise QueryError("query is empty; pass the text to search for")
    if "\x00" in query:
        raise QueryError("query contains a NUL character; remove it and search again")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryError("query is not valid Unicode text (it holds a lone surrogate)") from None
    if not any(ch.isalnum() for ch in query):
        raise QueryError(
            f"query {query[:40]!r} has no letters or digits (only operators or punctuation); "
            "include at least one word to search for"
        )
    return query


def _too_deep_error() -> FilterError:
    return FilterError(
        f"filter is nested more than {MAX_FILTER_DEPTH} levels deep; "
        'pass a flat object such as {"lang": "en"}'
    )


def _check_depth(value: object) -> None:
    """FilterError when objects and arrays nest past MAX_FILTER_DEPTH (iteratively, so a
    deep or self-referencing value cannot exhaust the stack)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping | list | tuple):
            if depth > MAX_FILTER_DEPTH:
                raise _too_deep_error()
            children = item.values() if isinstance(item, Mapping) else item
            stack.extend((child, depth + 1) for child in children)


def parse_filter(value: object) -> dict[str, Any] | None:
    """A metadata filter from a dict or a JSON string; chunks match when metadata contains it."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise FilterError(
                f"filter is not valid JSON ({exc.msg} at position {exc.pos}); "
                'pass an object such as {"lang": "en"}'
            ) from None
        except RecursionError:  # the json decoder recurses once per nesting level
            raise _too_deep_error() from None
    if not isinstance(value, Mapping):
        raise FilterError(
            f'filter must be a JSON object such as {{"lang": "en"}}, got {type(value).__name__}'
        )
    _check_depth(value)
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise FilterError(f"filter is not JSON-serialisable: {exc}") from None
    if "\\u0000" in text:
        raise FilterError("filter contains a NUL character, which PostgreSQL rejects")
    return dict(value) or None


def _or_default(param: params.Param[T], value: object, default: object, collection: str) -> T:
    """``value`` checked against ``param``; when it is None, the collection's stored
    ``default``, refused with what to do about it if stored before the bounds narrowed."""
    if value is None:
        if not param.accepts(default):
            raise InvalidInputError(
                f"collection {collection!r} has {param.name}={default!r} as its default, "
                f"but {param.name} must be {param.expected}; pass {param.name} with the "
                "search or update the collection's settings"
            )
        value = default
    return param.check(value)


def validate_options(
    collection: Collection,
    query: object,
    *,
    top_k: object,
    top_n: object,
    mode: object,
    filter: object,
    fusion: object,
    rrf_k: object,
    vector_weight: object,
    keyword_weight: object,
    max_query_chars: int,
    tenant: str | None = None,
    rerank_depth: object = None,
    one_per_document: object = params.ONE_PER_DOCUMENT,
) -> SearchOptions:
    """Check every search argument before touching the model or the database."""
    text = validate_query(query, max_query_chars)
    checked_top_k = params.TOP_K.check(top_k)
    checked_top_n = params.TOP_N.check(top_n)
    params.check_top_n(checked_top_n, checked_top_k)
    checked_depth = None if rerank_depth is None else params.RERANK_DEPTH.check(rerank_depth)
    params.check_rerank_depth(checked_depth, checked_top_k)
    if not isinstance(one_per_document, bool):
        raise InvalidInputError(f"one_per_document must be true or false, got {one_per_document!r}")
    checked_mode = params.MODE.check(mode)
    checked_filter = parse_filter(filter)
    # the collection's defaults as hybridsearch.fusion_defaults resolved them
    stored, name = collection.fusion_defaults, collection.name
    checked_fusion = _or_default(params.FUSION, fusion, stored.fusion, name)
    checked_rrf_k = _or_default(params.RRF_K, rrf_k, stored.rrf_k, name)
    checked_vector_weight = _or_default(
        params.VECTOR_WEIGHT, vector_weight, stored.vector_weight, name
    )
    checked_keyword_weight = _or_default(
        params.KEYWORD_WEIGHT, keyword_weight, stored.keyword_weight, name
    )
    # A leg searched alone keeps its own order: with its weight at 0 (a stored default
    # meant for hybrid search) every fused score would be 0 and the order arbitrary.
    if checked_mode == "vector" and checked_vector_weight == 0:
        checked_vector_weight = params.VECTOR_WEIGHT.default
    elif checked_mode == "keyword" and checked_keyword_weight == 0:
        checked_keyword_weight = params.KEYWORD_WEIGHT.default
    params.check_weights(checked_vector_weight, checked_keyword_weight)
    return SearchOptions(
        query=text,
        top_k=checked_top_k,
        top_n=checked_top_n,
        mode=checked_mode,
        filter=checked_filter,
        fusion=checked_fusion,
        rrf_k=checked_rrf_k,
        vector_weight=checked_vector_weight,
        keyword_weight=checked_keyword_weight,
        tenant=tenant,
        rerank_depth=checked_depth,
        one_per_document=one_per_document,
    )


def check_embedding(vector: object, collection: Collection) -> np.ndarray:
    """A float32 vector of the collection's dimension that pgvector can compute distances
    for (finite, squared norm within float32, not zero under cosine), or an EmbeddingError."""
    if isinstance(vector, str | bytes):
        raise EmbeddingError(
            f"query embedding must be a sequence of numbers, got {type(vector).__name__}"
        )
    try:
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused below
            array = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise EmbeddingError(f"query embedding must be a sequence of numbers: {exc}") from None
    if array.ndim != 1 or array.shape[0] != collection.dimensions:
        raise EmbeddingError(
            f"query embedding has shape {array.shape}; collection {collection.name!r} "
            f"expects {collection.dimensions} dimensions ({collection.embedding_model})"
        )
    if not np.all(np.isfinite(array)):
        raise EmbeddingError(
            "query embedding contains NaN or infinity (or a value beyond float32's range); "
            "check the model's output"
        )
    norm = float(np.linalg.norm(array.astype(np.float64)))
    if norm > MAX_NORM:
        raise EmbeddingError(
            f"query embedding has length {norm:.3g}, which overflows the float32 arithmetic "
            "of vector distances; normalise the vector"
        )
    if collection.distance == "cosine" and norm < MIN_COSINE_NORM:
        raise EmbeddingError(
            f"query embedding has length {norm:.3g}, too close to zero for a cosine distance "
            f"(collection {collection.name!r}); check the model's output"
        )
    return array
