"""Fuzz the Python service: HybridSearch.search with hostile arguments of every kind
gets a hybridsearch error or a sane result, and changes nothing.

No other error is tolerated: the inputs that once escaped as raw errors or NaN scores are
pinned by test_service_input_bugs_found_by_fuzzing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridsearch import (
    EmbeddingError,
    FilterError,
    HybridSearch,
    HybridSearchError,
    InvalidInputError,
    SchemaNotInstalledError,
    Settings,
)
from tests.reliability import fuzzing as fz
from tests.reliability.fuzzing import CASES, SUCCESSES, FuzzDB, fuzz_settings


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


service_filters = st.one_of(
    st.none(),
    fz.json_filters,
    fz.json_values.map(lambda v: json.dumps(v)),
    st.text(max_size=30),
    st.sampled_from(['{"lang": "en"}', "{lang: en", "[1, 2]", "null", '{"a": NaN}', "{}"]),
    st.integers(min_value=1, max_value=3000).map(_nested),
    st.integers(min_value=1, max_value=3000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.sampled_from([{"a": b"x"}, {(1, 2): 1}, {1: 2}, {"a": {1, 2}}, {"a": math.nan}]),
)
service_embeddings = st.one_of(
    st.none(),
    fz.vector_values.map(lambda v: np.asarray(v, dtype=np.float64)),
    fz.vector_values,
    st.sampled_from(["abcdefgh", b"12345678", np.ones((2, 4)), np.array([None] * 8)]),
)
service_ints = st.one_of(
    st.integers(min_value=-2, max_value=60),
    st.sampled_from([0, 1000, 1001, 2**31, 2**63, True, False, 1.5, "5", None]),
)


@pytest.fixture(scope="module")
def service(fuzz_db: FuzzDB) -> Iterator[HybridSearch]:
    with HybridSearch(Settings(database_url=fuzz_db.url)) as hs:
        yield hs


# Each of the ten arguments is valid 7 times in 8, so that a fair share of cases reaches
# the database and the result checks, while each hostile argument still occurs hundreds
# of times.
@given(
    collection=fz.mostly(fz.collection_names, st.sampled_from([None, 5, b"fz"]), odds=7),
    query=fz.mostly(
        st.lists(st.sampled_from(fz.WORDS), min_size=1, max_size=4).map(" ".join),
        fz.queries,
        st.sampled_from(fz.BIG_QUERIES),
        st.sampled_from([None, 5]),
        odds=7,
    ),
    flt=fz.mostly(st.one_of(st.none(), st.sampled_from(fz.GOOD_FILTERS)), service_filters, odds=7),
    top_k=fz.mostly(st.integers(min_value=5, max_value=60), service_ints, odds=7),
    top_n=fz.mostly(st.integers(min_value=1, max_value=5), service_ints, odds=7),
    mode=fz.mostly(
        st.sampled_from(["hybrid", "vector", "keyword"]),
        st.sampled_from(["HYBRID", "", None]),
        odds=7,
    ),
    fusion=fz.mostly(st.none(), fz.fusions, st.just(5), odds=7),
    rrf_k=fz.mostly(st.none(), fz.rrf_ks, st.sampled_from([1.5, "5", "x", True, 2**40]), odds=7),
    vector_weight=fz.mostly(st.none(), fz.weights, st.sampled_from(["1", "x", True]), odds=7),
    embedding=fz.mostly(
        fz.vector_values.filter(lambda v: len(v) == fz.DIMENSIONS).map(np.asarray),
        service_embeddings,
        odds=7,
    ),
)
@fuzz_settings("test_service_search")
def test_service_search(
    service: HybridSearch,
    unchanged: None,
    collection: Any,
    query: Any,
    flt: Any,
    top_k: Any,
    top_n: Any,
    mode: Any,
    fusion: Any,
    rrf_k: Any,
    vector_weight: Any,
    embedding: Any,
) -> None:
    """Only hybridsearch errors or a sane result, whatever the arguments."""
    CASES["test_service_search"] += 1
    try:
        result = service.search(
            collection,
            query,
            top_k=top_k,
            top_n=top_n,
            filter=flt,
            mode=mode,
            rerank=False,
            fusion=fusion,
            rrf_k=rrf_k,
            vector_weight=vector_weight,
            query_embedding=embedding,
        )
    except HybridSearchError as exc:
        # the schema is installed: this would be a parameter of a wrong type reaching SQL
        assert not isinstance(exc, SchemaNotInstalledError), exc
        return
    SUCCESSES["test_service_search"] += 1
    hits = result.results
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert len(hits) <= top_n
    assert result.reranked is False and result.note is not None
    assert all(h.scores.rerank is None for h in hits)
    assert all(
        math.isfinite(h.scores.fused)
        and (h.scores.vector_distance is None or math.isfinite(h.scores.vector_distance))
        for h in result.candidates
    )


def test_service_rejects_documented_bad_vectors(service: HybridSearch) -> None:
    """NaN, infinity and wrong dimensions are EmbeddingErrors before any SQL runs."""
    for vector in ([math.nan] * 8, [math.inf] * 8, [1.0] * 7, [1.0] * 9, []):
        with pytest.raises(EmbeddingError):
            service.search("fz", "postgres", query_embedding=np.asarray(vector))


SERVICE_INPUT_BUGS: list[tuple[str, Any, type[Exception]]] = [
    (
        "zero-norm vector on a cosine collection is searched, giving NaN distances",
        lambda hs: hs.search("fz", "postgres", query_embedding=np.zeros(8)),
        EmbeddingError,
    ),
    (
        "a vector whose squares overflow float32 is searched, giving NaN scores",
        lambda hs: hs.search("fz", "postgres", query_embedding=np.full(8, 1e20)),
        EmbeddingError,
    ),
    (
        "a 3000-deep filter raises RecursionError from json",
        lambda hs: hs.search("fz", "postgres", mode="keyword", filter=_nested(3000)),
        FilterError,
    ),
    (
        "a 3000-deep JSON filter text raises RecursionError from json",
        lambda hs: hs.search(
            "fz", "postgres", mode="keyword", filter='{"a":' * 3000 + "1" + "}" * 3000
        ),
        FilterError,
    ),
    (
        "a string query_embedding raises numpy's ValueError",
        lambda hs: hs.search("fz", "postgres", query_embedding="abcdefgh"),
        EmbeddingError,
    ),
    (
        "a collection name that is not a string escapes as a raw psycopg error",
        lambda hs: hs.search(5, "postgres", mode="keyword"),
        InvalidInputError,
    ),
    (
        "a collection name with NUL escapes as a raw psycopg DataError",
        lambda hs: hs.search("fz\x00", "postgres", mode="keyword"),
        InvalidInputError,
    ),
    (
        "rrf_k beyond int32 is reported as SchemaNotInstalledError",
        lambda hs: hs.search("fz", "postgres", mode="keyword", rrf_k=2**40),
        InvalidInputError,
    ),
    (
        "a non-string fusion is reported as SchemaNotInstalledError",
        lambda hs: hs.search("fz", "postgres", mode="keyword", fusion=5),
        InvalidInputError,
    ),
]


@pytest.mark.parametrize(
    ("case", "call", "error"), SERVICE_INPUT_BUGS, ids=[b[0] for b in SERVICE_INPUT_BUGS]
)
def test_service_input_bugs_found_by_fuzzing(
    service: HybridSearch, case: str, call: Any, error: type[Exception]
) -> None:
    """Each input once escaped as a raw error or gave NaN scores (the test id says how);
    now it is the listed hybridsearch error."""
    with pytest.raises(error):
        call(service)
