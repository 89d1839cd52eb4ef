"""Each exact keyword algorithm returns the exhaustive BM25 top K, for every kind of query.

search_keyword hands every query to one of two algorithms, term coverage and impact tiers
(sql/api/keyword_coverage.sql, keyword_impacts.sql), whichever it expects to be faster.
Each is called here directly, with the statistics search_keyword would hand it, and so is
search_keyword itself: whatever thresholds the router uses, every algorithm must give the
same answer. The reference scores every chunk in Python from its stored term frequencies
and words, so a bound that is too tight (a skipped subset or tier, a dropped candidate)
shows up as a missing or misranked chunk.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

K1, B = 1.2, 0.75
WORDS = [f"w{i:03d}x" for i in range(400)]
RARE = "r999x"
CORRELATED = ["c1x", "c2x", "c3x"]
#: search_keyword, or one algorithm called directly
ENTRIES = ["search_keyword", "coverage", "impacts"]
#: What keyword_topk_coverage takes at most.
COVERAGE_TERMS = 8

ALGORITHM = """
SELECT r.chunk_id, r.score
FROM hybridsearch.collections AS k
CROSS JOIN LATERAL hybridsearch.parse_keyword_query(k.analyzer, %(query)s) AS q
CROSS JOIN LATERAL hybridsearch.keyword_statistics(k.collection_id, q.terms) AS s
CROSS JOIN LATERAL hybridsearch.{}(
    k.collection_id, s.terms, s.idf, s.max_tf, k.bm25_k1, k.bm25_b, s.avglen, s.min_length,
    s.max_length, s.chunks, %(k)s, q.required, q.excluded, %(filter)s, %(tenant)s)
    WITH ORDINALITY AS r(chunk_id, score, n)
WHERE k.name = %(name)s
ORDER BY r.n
"""
ROUTER = (
    "SELECT chunk_id, keyword_score FROM hybridsearch.search_keyword("
    "%(name)s, %(query)s, %(k)s, %(filter)s) ORDER BY keyword_rank"
)


@dataclass(frozen=True)
class Chunk:
    chunk_id: int
    tf: dict[str, int]
    length: int
    metadata: dict[str, int]
    tenant: str
    words: tuple[str, ...]


def _holds(words: tuple[str, ...], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    return any(words[i : i + n] == phrase for i in range(len(words) - n + 1))


@dataclass(frozen=True)
class Query:
    """Words to score, required phrases, excluded words or phrases; a filter, a tenant."""

    words: tuple[str, ...]
    phrases: tuple[tuple[str, ...], ...] = ()
    excluded: tuple[tuple[str, ...], ...] = ()
    filter: dict[str, int] | None = None
    tenant: str | None = None

    @property
    def text(self) -> str:
        def quoted(words: tuple[str, ...]) -> str:
            return words[0] if len(words) == 1 else '"' + " ".join(words) + '"'

        parts = [*self.words, *(quoted(p) for p in self.phrases)]
        return " ".join(parts + ["-" + quoted(x) for x in self.excluded])

    @property
    def terms(self) -> list[str]:
        return sorted({*self.words, *(w for p in self.phrases for w in p)})

    def admits(self, c: Chunk) -> bool:
        return (
            all(c.metadata.get(k) == v for k, v in (self.filter or {}).items())
            and self.tenant in (None, c.tenant)
            and all(_holds(c.words, p) for p in self.phrases)
            and not any(_holds(c.words, x) for x in self.excluded)
        )

    def __str__(self) -> str:
        return self.text[:50] + (f" {self.filter}" if self.filter else "")


def _texts(rng: np.random.Generator, n: int) -> list[str]:
    """Zipf text with lengths from 3 to 600 words and some heavily repeated words, so
    many tf and length buckets are populated."""
    p = 1.0 / np.arange(1, len(WORDS) + 1) ** 1.1
    p /= p.sum()
    texts = []
    for _ in range(n):
        length = int(rng.choice([3, 10, 40, 150, 600], p=[0.1, 0.2, 0.3, 0.3, 0.1]))
        words = list(rng.choice(WORDS, size=length, p=p))
        if rng.random() < 0.2:  # a word repeated up to 40 times (tf buckets above 8)
            words += [str(rng.choice(WORDS[:60]))] * int(rng.integers(5, 40))
        texts.append(" ".join(words))
    return texts


@contextmanager
def _collection(database_url: str, texts: list[str]) -> Iterator[tuple[str, list[Chunk]]]:
    """A collection of ``texts``, one chunk each, with metadata {"g": i % 3, "r": i % 50}
    (filters keeping a third and 2 % of the chunks) and tenant 'small' for a fifth of
    them, 'big' for the rest; yields its name and its chunks."""
    name = f"prune_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        cid = conn.execute(
            "SELECT (hybridsearch.create_collection(%s, 'none', 3, 'cosine', 'simple'))"
            ".collection_id",
            (name,),
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            """
            WITH docs AS (
                INSERT INTO hybridsearch.documents
                    (collection_id, external_id, tenant_id, content_hash, chunk_count)
                SELECT %(c)s, 'd' || i, CASE WHEN i %% 5 = 0 THEN 'small' ELSE 'big' END,
                       'h', 1
                FROM generate_series(1, %(n)s) AS i
                RETURNING document_id, external_id, tenant_id
            )
            INSERT INTO hybridsearch.chunks (collection_id, document_id, tenant_id, ordinal,
                                             content, metadata, embedding, fts)
            SELECT %(c)s, docs.document_id, docs.tenant_id, 0, t.content,
                   jsonb_build_object('g', t.i %% 3, 'r', t.i %% 50),
                   '[1,0,0]', hybridsearch.document_tsvector('simple', t.content)
            FROM unnest(%(texts)s::text[]) WITH ORDINALITY AS t(content, i)
            JOIN docs ON docs.external_id = 'd' || t.i
            """,
            {"c": cid, "n": len(texts), "texts": texts},
        )
        # (the filters' routes follow the planner's estimates, which need statistics)
        conn.execute(sql.SQL("ANALYZE hybridsearch.{}").format(sql.Identifier(f"chunks_{cid}")))
        rows = conn.execute(
            "SELECT chunk_id, term_freqs, term_count, metadata, tenant_id, content"
            " FROM hybridsearch.chunks WHERE collection_id = %s",
            (cid,),
        ).fetchall()
        try:
            yield name, [Chunk(r[0], r[1], r[2], r[3], r[4], tuple(r[5].split())) for r in rows]
        finally:
            conn.execute("SELECT hybridsearch.drop_collection(%s)", (name,))


@pytest.fixture(scope="module")
def corpus(database_url: str) -> Iterator[tuple[str, list[Chunk]]]:
    """10,000 chunks of 3 to 600 words: enough for search_keyword to take term coverage;
    and a rare word held by two chunks, 200 times by one of them."""
    texts = _texts(np.random.default_rng(11), 10_000)
    texts += [" ".join([RARE] * 200 + ["w001x"]), f"{RARE} w002x"]
    with _collection(database_url, texts) as made:
        yield made


@pytest.fixture(scope="module")
def flat_corpus(database_url: str) -> Iterator[tuple[str, list[Chunk]]]:
    """10,000 chunks of exactly 40 words from 60: every length the same, tf mostly 1 or
    2, so scores tie in large groups and the visits of common words are capped."""
    rng = np.random.default_rng(5)
    p = 1.0 / np.arange(1, 61) ** 1.1
    words = rng.choice(WORDS[:60], size=(10_000, 40), p=p / p.sum())
    with _collection(database_url, [" ".join(row) for row in words]) as made:
        yield made


@pytest.fixture(scope="module")
def correlated_corpus(database_url: str) -> Iterator[tuple[str, list[Chunk]]]:
    """10,000 chunks of 40 Zipf words, a tenth of them also holding c1x, c2x and c3x
    (tf 1 to 3 each). Independent words that common would be held together by about 10
    chunks, so term coverage fetches the three's chunks whole at once; here 1,000 hold all
    three, so that fetch is capped and the visit has to go by tf levels after all."""
    rng = np.random.default_rng(17)
    p = 1.0 / np.arange(1, 201) ** 1.1
    words = rng.choice(WORDS[:200], size=(10_000, 40), p=p / p.sum())
    texts = []
    for i, row in enumerate(words):
        extra = [] if i % 10 else [w for w in CORRELATED for _ in range(rng.integers(1, 4))]
        texts.append(" ".join(list(row) + extra))
    with _collection(database_url, texts) as made:
        yield made


def _reference(chunks: list[Chunk], query: Query) -> list[tuple[int, float]]:
    """Exhaustive Okapi BM25 (Lucene idf) over every chunk the query admits, best first,
    ties by id. The statistics are the whole collection's: a filter, a tenant, a phrase
    or an exclusion restricts the chunks returned, never the scores."""
    n = len(chunks)
    avglen = sum(c.length for c in chunks) / n
    df = {t: sum(1 for c in chunks if t in c.tf) for t in query.terms}
    idf = {t: math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in query.terms if df[t]}
    scored = []
    for c in (c for c in chunks if query.admits(c)):
        score = sum(
            idf[t] * c.tf[t] * (K1 + 1) / (c.tf[t] + K1 * (1 - B + B * c.length / avglen))
            for t in idf
            if t in c.tf
        )
        if score > 0:
            scored.append((c.chunk_id, score))
    return sorted(scored, key=lambda s: (-s[1], s[0]))


def _top_k(
    conn: psycopg.Connection, entry: str, name: str, query: Query, k: int
) -> list[tuple[int, float]]:
    """The top ``k`` from search_keyword (with the query's tenant set for the
    transaction, as the service sets it) or from one algorithm called directly."""
    params = {
        "name": name,
        "query": query.text,
        "k": k,
        "filter": None if query.filter is None else Jsonb(query.filter),
        "tenant": query.tenant,
    }
    if entry != "search_keyword":
        function = sql.Identifier(f"keyword_topk_{entry}")
        return conn.execute(sql.SQL(ALGORITHM).format(function), params).fetchall()
    with conn.transaction():
        if query.tenant is not None:
            conn.execute("SELECT set_config('hybridsearch.tenant_id', %s, true)", (query.tenant,))
        return conn.execute(ROUTER, params).fetchall()


def _assert_same_top_k(got: list[tuple[int, float]], want: list[tuple[int, float]], k: int) -> None:
    """``got`` is the top ``k`` of ``want`` up to the order of ties: each rank holds a
    distinct chunk whose reference score is that rank's (to 1e-9, as a float sum may set
    exact ties a last bit apart, at the K-th rank too)."""
    reference = dict(want)
    assert len(got) == min(k, len(want))
    assert len({chunk_id for chunk_id, _ in got}) == len(got)
    for (chunk_id, score), (_, expected) in zip(got, want, strict=False):
        assert score == pytest.approx(expected, rel=1e-9)
        assert reference.get(chunk_id) == pytest.approx(expected, rel=1e-9)


def _check(
    conn: psycopg.Connection, entry: str, made: tuple[str, list[Chunk]], query: Query, k: int
) -> None:
    name, chunks = made
    _assert_same_top_k(_top_k(conn, entry, name, query, k), _reference(chunks, query), k)


QUERIES = [
    ("w000x",),  # the most common word: every chunk, tf buckets up to 128
    ("w001x", "w002x"),
    ("w010x", "w200x", "w350x"),
    ("w003x", "w030x", "w120x", "w260x", "w399x"),
    tuple(f"w{i:03d}x" for i in range(0, 400, 37)),  # 11 terms, common and rare
    tuple(f"w{i:03d}x" for i in range(5, 12)),  # 7 common terms
    ("w150x", "nosuchword"),
    # a rare word at tf 200: the chance of its high levels underflows a float
    (RARE, "w001x"),
]


def _cases(queries: list[Query]) -> list[Any]:
    """(entry, query) for each entry that takes the query: coverage takes at most 8 terms."""
    return [
        pytest.param(entry, query, id=f"{entry}-{query}")
        for query in queries
        for entry in ENTRIES
        if entry != "coverage" or len(query.terms) <= COVERAGE_TERMS
    ]


@pytest.mark.parametrize(("entry", "query"), _cases([Query(words) for words in QUERIES]))
@pytest.mark.parametrize("top_k", [1, 10, 50])
@pytest.mark.parametrize("flt", [None, {"g": 1}, {"r": 7}], ids=["all", "third", "2pct"])
def test_plain_word_queries_return_exhaustive_top_k(
    conn: psycopg.Connection,
    corpus: tuple[str, list[Chunk]],
    entry: str,
    query: Query,
    top_k: int,
    flt: dict[str, int] | None,
) -> None:
    _check(conn, entry, corpus, replace(query, filter=flt), top_k)


PHRASES_AND_EXCLUSIONS = [
    *(Query(words, excluded=(("w004x",),)) for words in QUERIES[1:6]),
    Query(("w010x",), phrases=(("w000x", "w001x"),)),
    Query((), phrases=(("w001x", "w000x"),)),
    # a phrase of one word repeated: tf-bucket repeats
    Query(("w030x",), phrases=(("w005x", "w005x"),)),
    Query(("w001x", "w002x"), excluded=(("w000x", "w001x"),)),  # an excluded phrase
    Query(("w020x",), phrases=(("w000x", "w001x"),), excluded=(("w003x",),), filter={"g": 1}),
    Query((), phrases=((RARE, RARE),)),
    Query(("w001x",), phrases=((RARE, "w002x"),)),
    # more words than term coverage takes, with a phrase: impact tiers from search_keyword
    Query(tuple(f"w{i:03d}x" for i in range(5, 12)), phrases=(("w000x", "w002x"),)),
]


@pytest.mark.parametrize(("entry", "query"), _cases(PHRASES_AND_EXCLUSIONS))
def test_phrases_and_exclusions_return_exhaustive_top_k(
    conn: psycopg.Connection, corpus: tuple[str, list[Chunk]], entry: str, query: Query
) -> None:
    """Required phrases and exclusions restrict the chunks returned, never the scores."""
    _check(conn, entry, corpus, query, 20)


def test_a_phrase_of_a_word_no_chunk_holds_matches_nothing(
    conn: psycopg.Connection, corpus: tuple[str, list[Chunk]]
) -> None:
    query = Query(("w002x",), phrases=(("w001x", "nosuchword"),))
    assert _top_k(conn, "search_keyword", corpus[0], query, 10) == []


@pytest.mark.parametrize(
    "query",
    [
        Query(("w001x", "w002x"), tenant="small"),
        Query(("w003x", "w030x", "w120x"), tenant="big", filter={"r": 7}),
        Query((RARE, "w001x"), tenant="small"),
        Query(("w010x",), phrases=(("w000x", "w001x"),), tenant="small"),
    ],
    ids=lambda q: f"{q} {q.tenant}",
)
@pytest.mark.parametrize("entry", ENTRIES)
def test_tenant_queries_return_exhaustive_top_k(
    conn: psycopg.Connection, corpus: tuple[str, list[Chunk]], entry: str, query: Query
) -> None:
    _check(conn, entry, corpus, query, 20)


@pytest.mark.parametrize(
    "words",
    [
        ("w000x",),
        ("w000x", "w001x"),
        ("w002x", "w005x", "w030x"),
        ("w001x", "w003x", "w010x", "w020x", "w050x"),
    ],
    ids=lambda t: "+".join(t),
)
@pytest.mark.parametrize("entry", ENTRIES)
def test_tied_scores_return_exhaustive_top_k(
    conn: psycopg.Connection, flat_corpus: tuple[str, list[Chunk]], entry: str, words: tuple[str]
) -> None:
    _check(conn, entry, flat_corpus, Query(words), 50)


@pytest.mark.parametrize(
    "words", [tuple(CORRELATED), (*CORRELATED, "w005x")], ids=lambda t: "+".join(t)
)
@pytest.mark.parametrize("top_k", [10, 50])
@pytest.mark.parametrize("entry", ENTRIES)
def test_words_that_occur_together_return_exhaustive_top_k(
    conn: psycopg.Connection,
    correlated_corpus: tuple[str, list[Chunk]],
    entry: str,
    words: tuple[str, ...],
    top_k: int,
) -> None:
    _check(conn, entry, correlated_corpus, Query(words), top_k)


@pytest.mark.parametrize("entry", ["search_keyword", "impacts"])
def test_impact_tiers_take_any_number_of_terms(
    conn: psycopg.Connection, corpus: tuple[str, list[Chunk]], entry: str
) -> None:
    """80 terms: more than a bigint has bits, one per term, for what a chunk was seen with."""
    _check(conn, entry, corpus, Query(tuple(WORDS[::5]), excluded=(("w001x",),)), 20)


def test_term_coverage_refuses_more_terms_than_it_takes(
    conn: psycopg.Connection, corpus: tuple[str, list[Chunk]]
) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="at most 8 terms"):
        _top_k(conn, "coverage", corpus[0], Query(tuple(WORDS[:9])), 10)


def test_coverage_visits_use_the_impacts_index_in_a_fresh_session(
    database_url: str, corpus: tuple[str, list[Chunk]]
) -> None:
    """A new session plans each visit once, for any keys: it must still be one GIN scan,
    not a read of the whole partition filtered row by row."""
    name, _ = corpus
    with psycopg.connect(database_url, autocommit=True) as conn:
        cid = conn.execute(
            "SELECT (hybridsearch.get_collection(%s)).collection_id", (name,)
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(sql.SQL("ANALYZE hybridsearch.{}").format(sql.Identifier(f"chunks_{cid}")))
    with psycopg.connect(database_url, autocommit=True) as conn:
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute("LOAD 'auto_explain'")
        for setting in ("log_min_duration = 0", "log_nested_statements = on", "log_level = notice"):
            conn.execute(f"SET auto_explain.{setting}")
        conn.execute(
            "SELECT count(*) FROM hybridsearch.search_keyword(%s, %s, 50)",
            (name, "w001x w003x w010x w020x w050x"),
        ).fetchone()
    visits = [plan for plan in notices if "WITH visited AS" in plan]
    assert visits, "no term-coverage visit was planned"
    for plan in visits:
        assert f"Bitmap Index Scan on chunks_{cid}_impacts_idx" in plan, plan
        assert "Filter: ((impacts" not in plan, plan
