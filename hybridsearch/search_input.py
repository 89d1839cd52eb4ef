"""Search arguments, validated: one place for the sync and async clients.

Every check runs before the search SQL, so a bad argument is a precise hybridsearch
error with a message that says what was expected, never a raw psycopg, numpy or
RecursionError, and never a NaN score.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any, Literal

import numpy as np

from hybridsearch.collections import Collection
from hybridsearch.errors import EmbeddingError, FilterError, InvalidInputError, QueryError

Mode = Literal["hybrid", "vector", "keyword"]
MODES: tuple[Mode, ...] = ("hybrid", "vector", "keyword")
FUSIONS = ("rrf", "weighted")
MAX_TOP_K = 1000
#: rrf_k is a PostgreSQL integer
MAX_RRF_K = 2**31 - 1
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
    fusion: str
    rrf_k: int
    vector_weight: float
    keyword_weight: float
    tenant: str | None = None


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


def _fusion(value: object, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or value not in FUSIONS:
        raise InvalidInputError(f"fusion must be rrf or weighted, got {value!r}")
    return value


def _rrf_k(value: object, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RRF_K:
        raise InvalidInputError(
            f"rrf_k must be an integer between 0 and {MAX_RRF_K}, got {value!r}"
        )
    return value


def _weight(name: str, value: object, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidInputError(f"{name} must be a number, got {type(value).__name__}")
    weight = float(value)
    if not 0 <= weight < math.inf:
        raise InvalidInputError(f"{name} must be a finite number >= 0, got {value!r}")
    return weight


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
) -> SearchOptions:
    """Check every search argument before touching the model or the database."""
    text = validate_query(query, max_query_chars)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise InvalidInputError(
            f"top_k must be an integer between 1 and {MAX_TOP_K}, got {top_k!r}"
        )
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise InvalidInputError(f"top_n must be a positive integer, got {top_n!r}")
    if top_n > top_k:
        raise InvalidInputError(
            f"top_n ({top_n}) cannot exceed top_k ({top_k}): the reranker picks TopN from TopK"
        )
    if mode not in MODES:
        raise InvalidInputError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    defaults = collection.settings
    return SearchOptions(
        query=text,
        top_k=top_k,
        top_n=top_n,
        mode=mode,
        filter=parse_filter(filter),
        fusion=_fusion(fusion, defaults.fusion),
        rrf_k=_rrf_k(rrf_k, defaults.rrf_k),
        vector_weight=_weight("vector_weight", vector_weight, defaults.vector_weight),
        keyword_weight=_weight("keyword_weight", keyword_weight, defaults.keyword_weight),
        tenant=tenant,
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
