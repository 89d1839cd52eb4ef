"""Fuzz the Python service: HybridSearch.search with hostile arguments of every kind
gets a hybridsearch error or a sane result, and changes nothing.

Unhandled errors are tolerated only where they match an already reported product bug
(pinned by the strict xfail tests below), and counted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
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
from tests.reliability.fuzzing import CASES, KNOWN, SUCCESSES, FuzzDB, fuzz_settings


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def _depth(value: object) -> int:
    """Nesting depth of a filter object or the bracket depth of a JSON text."""
    if isinstance(value, str):
        level = deepest = 0
        for ch in value:
            level += ch in "[{"
            level -= ch in "]}"
            deepest = max(deepest, level)
        return deepest
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


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
KNOWN_SERVICE_BUG_TYPES = (RecursionError, ValueError, TypeError, psycopg.Error, UnicodeError)


def _service_known_bug(
    error: BaseException, collection: object, flt: object, embedding: object, mode: object
) -> str | None:
    """The reported product bug an unhandled error belongs to, if any."""
    if isinstance(error, RecursionError) and _depth(flt) > 200:
        return "deeply nested filter raises RecursionError"
    if (
        isinstance(error, (ValueError, TypeError))
        and isinstance(embedding, (str, bytes))
        and mode != "keyword"
    ):
        return "non-numeric query_embedding raises a raw ValueError/TypeError"
    if isinstance(error, (psycopg.Error, UnicodeError)) and (
        not isinstance(collection, str) or fz.client_errors(collection)
    ):
        return "collection name of another type or with NUL/surrogate escapes raw"
    return None


def _fusion_type_bug(fusion: object, rrf_k: object, *ws: object) -> bool:
    """Known product bug: fusion parameters are not validated in Python, so a wrong type
    reaches PostgreSQL as an unknown function signature (42883 -> SchemaNotInstalledError)
    or an unencodable string escapes as UnicodeEncodeError."""
    if fusion is not None and (not isinstance(fusion, str) or fz.client_errors(fusion)):
        return True
    if rrf_k is not None and (
        isinstance(rrf_k, (bool, float)) or (isinstance(rrf_k, int) and abs(rrf_k) > fz.INT32_MAX)
    ):
        return True
    return any(isinstance(w, bool) for w in ws)


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
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
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
    except SchemaNotInstalledError:
        assert _fusion_type_bug(fusion, rrf_k, vector_weight)
        KNOWN["fusion parameter of a wrong type reported as SchemaNotInstalledError"] += 1
        return
    except HybridSearchError:
        return
    except KNOWN_SERVICE_BUG_TYPES as exc:
        bug = _service_known_bug(exc, collection, flt, embedding, mode)
        if bug is None and isinstance(exc, UnicodeEncodeError):
            assert _fusion_type_bug(fusion, rrf_k, vector_weight), exc
            bug = "fusion string with a surrogate escapes as UnicodeEncodeError"
        assert bug is not None, f"unhandled {type(exc).__name__}: {exc}"
        KNOWN[bug] += 1
        return
    SUCCESSES["test_service_search"] += 1
    hits = result.results
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert len(hits) <= top_n
    assert result.reranked is False and result.note is not None
    assert all(h.scores.rerank is None for h in hits)
    finite = all(
        math.isfinite(h.scores.fused)
        and (h.scores.vector_distance is None or math.isfinite(h.scores.vector_distance))
        for h in result.candidates
    )
    if not finite:
        assert embedding is not None and fz.degenerate_vector(
            np.asarray(embedding, dtype=np.float64), fz.COLLECTIONS[collection]
        )
        KNOWN["degenerate query vector searched (NaN/inf distances)"] += 1


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


@pytest.mark.xfail(strict=True, reason="product bug: see the test id")
@pytest.mark.parametrize(
    ("case", "call", "error"), SERVICE_INPUT_BUGS, ids=[b[0] for b in SERVICE_INPUT_BUGS]
)
def test_service_input_bugs_found_by_fuzzing(
    service: HybridSearch, case: str, call: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        call(service)
