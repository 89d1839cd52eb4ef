"""Hypothesis strategies and outcome oracles for ``test_fuzz.py``.

An oracle predicts, from the inputs alone, which outcomes a call may have, as labels:

* ``"ok"`` — the call succeeds (and its result is then checked for sanity);
* ``"client:nul"`` / ``"client:surrogate"`` — psycopg refuses to send a text parameter
  holding NUL (``psycopg.DataError``) or a lone surrogate (``UnicodeEncodeError``);
  nothing reaches the server;
* a SQLSTATE — raised by PostgreSQL. Only these are clean:

  ====== ==========================================================================
  22023  invalid_parameter_value: hybridsearch's own validation (top_k, filter type,
         embedding dimension, fusion method, rrf_k, weights)
  P0002  no_data_found: unknown collection
  22000  pgvector rejects a vector parameter with NaN, infinity or no dimensions
  22003  a bound integer or vector element out of range for its type
  22P02  a parameter that is not valid jsonb or vector text (NaN, lone \\u surrogate)
  22P05  a jsonb parameter holding \\u0000
  54000  a vector parameter above pgvector's 16,000 dimensions
  ====== ==========================================================================

  22xxx are psycopg ``DataError`` subclasses; 54000 only ever comes from pgvector's
  input function for a too-long vector literal.

Layers apply in order: client errors, then parameter decoding errors, then unknown
collection, then validation; the first layer that applies is the allowed set.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
import psycopg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from hybridsearch.params import RRF_K, VECTOR_WEIGHT
from tests.reliability import support
from tests.reliability.support import connect

INT32_MAX = 2**31 - 1

# -- case budget: test_fuzz_total.py checks that these add up to 10,000 -----------------

SCALE = float(os.environ.get("HYBRIDSEARCH_FUZZ_SCALE", "1"))
TARGET_CASES = 10_000
BUDGET = {
    "test_sql_search_keyword": 2600,
    "test_sql_keyword_big_queries": 16,
    "test_sql_parse_keyword_query": 1200,
    "test_sql_search_vector": 1800,
    "test_sql_search_hybrid": 1900,
    "test_service_search": 2700,
}
CASES: Counter[str] = Counter()
#: cases that reached a successful answer, per test: the sweep must not stop at validation
SUCCESSES: Counter[str] = Counter()


def fuzz_settings(name: str) -> settings:
    """Hypothesis settings for the fuzz test ``name``: its share of the case budget."""
    return settings(
        max_examples=max(10, round(BUDGET[name] * SCALE)),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


class FuzzDB:
    """A database of its own holding two small collections (cosine and l2)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = connect(url)
        # A hung query fails the test (57014 is not a clean outcome) instead of CI.
        self.conn.execute("SET statement_timeout = '10s'")
        self.chunk_ids: dict[str, set[int]] = {}


COLLECTIONS = {"fz": "cosine", "fz_l2": "l2"}
DIMENSIONS = 8

TSQUERY_SYNTAX = [
    *("&", "|", "!", "!!", "<->", "<2>", "<0>", ":*", ":A", "(", ")", "'", "''", '"', '""'),
    *("-", "--", "\\", "OR", "AND", "NOT", '-"', "*", ":", "@@", "<", ">", "&&", "||"),
]
STOP_WORDS = ["the", "a", "an", "of", "and", "or", "to", "is", "in", "it", "be", "was"]
SQL_PAYLOADS = [
    "'; DROP TABLE hybridsearch.chunks; --",
    "' OR '1'='1",
    '" OR 1=1 --',
    "$$; DROP SCHEMA hybridsearch CASCADE; $$",
    "1); DELETE FROM hybridsearch.documents; --",
    "'||pg_sleep(5)||'",
    "'); CREATE ROLE fuzz_owned SUPERUSER; --",
    "COPY hybridsearch.chunks TO PROGRAM 'id'",
    *("%s", "%(x)s", "%%", "{}", "$1", "::regclass", "/*", "*/", ";", "\\x00", "E'\\\\'"),
]
WORDS = [
    *("postgres", "vector", "search", "chunk", "hybrid", "数据库", "向量检索", "XJ-4471-B"),
    *("café", "naïve", "Ω", "🙂", *support.WORDS),
]


class Big(str):
    """A long string whose repr stays short in Hypothesis' failure reports."""

    def __repr__(self) -> str:
        return f"Big({len(self):,} chars starting {str(self[:24])!r})"


# Over a megabyte each, but for one unbroken 60,000-character CJK run (see
# test_sql_keyword_long_cjk_run; a run over ~170,000 characters still exceeds the 1 MB
# tsvector input limit).
BIG_QUERIES = [
    Big('"' + " ".join(f"w{i}" for i in range(150_000))),  # a phrase: its first 256 words
    Big("word " * 210_000),
    Big("postgres " * 120_000),
    Big("x" * 1_048_576),
    Big("数据库 " * 262_144),
    Big("-" + "a b " * 262_144),
    Big("& | ! <-> " * 105_000),
    Big("'; DROP TABLE x; -- " * 52_429),
    Big(" ".join(f"w{i}" for i in range(150_000))),
    Big("数据库" * 20_000),
]


def mostly(good: st.SearchStrategy[Any], *hostile: st.SearchStrategy[Any], odds: int = 3) -> Any:
    """``good`` about ``odds`` times as often as the ``hostile`` strategies together, so
    that most cases pass validation and reach the search itself. (Repeating a branch of
    st.one_of does not weight it.)"""
    hostile_one = st.one_of(*hostile)
    return st.integers(min_value=0, max_value=odds).flatmap(lambda i: good if i else hostile_one)


surrogates = st.characters(categories=["Cs"])
query_pieces = st.one_of(
    st.sampled_from(TSQUERY_SYNTAX),
    st.sampled_from(STOP_WORDS),
    st.sampled_from(SQL_PAYLOADS),
    st.sampled_from(WORDS),
    st.text(max_size=12),
    surrogates,
    st.just("\x00"),
)
queries = st.one_of(
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join),
    st.just(""),
    st.text(alphabet=" \t\r\n\u3000\u00a0", max_size=6),
    st.lists(st.sampled_from(STOP_WORDS), min_size=1, max_size=6).map(" ".join),
    st.lists(query_pieces, max_size=10).map(" ".join),
    st.lists(query_pieces, max_size=10).map("".join),
    st.text(max_size=200),
)
# Big queries come first (a piece after them may open a phrase, read up to 256 words).
big_queries = st.tuples(st.sampled_from(BIG_QUERIES), st.lists(query_pieces, max_size=3)).map(
    lambda t: Big(t[0] + " ".join(t[1]))
)

json_keys = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["lang", "n", "tags", "nested", "\x00", "a\x00b", *SQL_PAYLOADS]),
    surrogates,
    st.tuples(surrogates, surrogates).map("".join),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=10),
    st.sampled_from(["en", "de", "\x00", *SQL_PAYLOADS]),
    surrogates,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_keys, inner, max_size=4),
    max_leaves=12,
)
GOOD_FILTERS = [{"lang": "en"}, {"lang": "de"}, {"tags": ["x"]}, {"nested": {"a": 1}}, {}]
json_filters = st.one_of(
    st.sampled_from(GOOD_FILTERS),
    st.dictionaries(json_keys, json_values, max_size=4),
    json_values,
)
#: SQL NULL (None) or a jsonb parameter
sql_filters = mostly(
    st.one_of(st.none(), st.sampled_from(GOOD_FILTERS).map(Jsonb)), json_filters.map(Jsonb)
)

top_ks = mostly(
    st.integers(min_value=1, max_value=60),
    st.sampled_from([0, -1, 1000, 1001, INT32_MAX, INT32_MAX + 1, -(2**31) - 1, 2**63, None]),
)
collection_names = mostly(
    st.sampled_from(["fz", "fz_l2"]),
    st.sampled_from(["missing", "FZ", "", "fz\x00", "fz\ud800", *SQL_PAYLOADS]),
    st.text(max_size=8),
)

FLOAT32_MAX = float(np.finfo(np.float32).max)
vector_elements = st.one_of(
    st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [0.0, -0.0, math.nan, math.inf, -math.inf, 3.5e38, -1e39, 3.4028235e38, 1e-50, 1e20]
    ),
)
vector_values = mostly(
    st.lists(
        st.floats(min_value=-1, max_value=1, width=32), min_size=DIMENSIONS, max_size=DIMENSIONS
    ),
    st.lists(vector_elements, min_size=DIMENSIONS, max_size=DIMENSIONS),
    st.lists(st.just(0.0), min_size=DIMENSIONS, max_size=DIMENSIONS),
    st.lists(vector_elements, max_size=12),
    st.sampled_from([2000, 16_001]).map(lambda n: [0.5] * n),
)


def vector_text(values: Iterable[float]) -> str:
    """A pgvector literal as a SQL user writes it (repr gives nan/inf for specials)."""
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


# -- oracles --------------------------------------------------------------------------


def has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


def client_errors(*texts: object) -> set[str]:
    """What psycopg raises before sending these text parameters."""
    found = set()
    for text in texts:
        if isinstance(text, str):
            if "\x00" in text:
                found.add("client:nul")
            if has_surrogate(text):
                found.add("client:surrogate")
    return found


def _json_string_errors(text: str, found: set[str]) -> None:
    # json.dumps escapes every non-ASCII character; PostgreSQL joins a high surrogate
    # escape with the low one after it and rejects any other surrogate and \u0000.
    i = 0
    while i < len(text):
        code = ord(text[i])
        if code == 0:
            found.add("22P05")
        elif 0xD800 <= code <= 0xDBFF:
            if i + 1 < len(text) and 0xDC00 <= ord(text[i + 1]) <= 0xDFFF:
                i += 1
            else:
                found.add("22P02")
        elif 0xDC00 <= code <= 0xDFFF:
            found.add("22P02")
        i += 1


def json_decode_errors(value: Any) -> set[str]:
    """SQLSTATEs PostgreSQL's jsonb input raises for ``Jsonb(value)``."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            found.add("22P02")  # json.dumps writes NaN / Infinity, which JSON lacks
        elif isinstance(item, str):
            _json_string_errors(item, found)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key, inner in item.items():
                _json_string_errors(key, found)
                stack.append(inner)
    return found


def int_param_errors(*values: int | None) -> set[str]:
    return {"22003" for v in values if v is not None and not -(2**31) <= v <= INT32_MAX}


def vector_decode_errors(values: list[float]) -> set[str]:
    found = set()
    if not values:
        found.add("22000")
    if len(values) > 16_000:
        found.add("54000")
    with np.errstate(over="ignore"):
        for v in values:
            if not math.isfinite(v):
                found.add("22000")
            elif math.isinf(np.float32(v)):
                found.add("22003")
    return found


def filter_invalid(value: Jsonb | None) -> bool:
    """hybridsearch.check_filter rejects (22023) any jsonb that is not an object."""
    return value is not None and not isinstance(value.obj, dict)


def top_k_invalid(top_k: int | None) -> bool:
    return top_k is None or not 1 <= top_k <= 1000


def first_layer(*layers: set[str]) -> set[str]:
    return next((layer for layer in layers if layer), {"ok"})


def outcome(error: BaseException | None) -> str:
    """The label of what a call did."""
    if error is None:
        return "ok"
    if isinstance(error, UnicodeEncodeError):
        return "client:surrogate"
    if isinstance(error, psycopg.Error):
        if error.sqlstate:
            return error.sqlstate
        if "NUL" in str(error):
            return "client:nul"
    return f"unexpected {type(error).__name__}: {error}"


def degenerate_vector(values: list[float] | np.ndarray, distance: str) -> bool:
    """A query vector both the service and hybridsearch.search_vector refuse: longer than
    1e18, whose float32 distances overflow, or under cosine shorter than 1e-18."""
    with np.errstate(over="ignore"):
        vector = np.asarray(values, dtype=np.float64).astype(np.float32).astype(np.float64)
    norm = float(np.linalg.norm(vector))
    return norm > 1e18 or (distance == "cosine" and norm < 1e-18)


# -- fusion parameters ----------------------------------------------------------------

fusions = mostly(
    st.sampled_from(["zscore", "rrf", "weighted"]),
    st.sampled_from(["RRF", "", "max", None, *SQL_PAYLOADS]),
    st.text(max_size=6),
)
rrf_ks = mostly(
    st.integers(min_value=RRF_K.minimum, max_value=200),
    st.sampled_from(
        [None, -1, 0, RRF_K.maximum, RRF_K.maximum + 1, INT32_MAX, INT32_MAX + 1, -(2**31)]
    ),
)
weights = mostly(
    st.floats(min_value=0, max_value=10),
    st.floats(),
    st.sampled_from(
        [None, 0.0, -0.0, 5e-324, 1e-310, VECTOR_WEIGHT.maximum, 1e308, 1.7976931348623157e308]
    ),
)
