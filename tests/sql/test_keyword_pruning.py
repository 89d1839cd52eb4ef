"""Every pruned keyword path returns the exhaustive BM25 top K: term coverage (queries of
up to 5 words in collections of 10,000 chunks or more, unfiltered or with a filter keeping
3 % of the chunks or more), impact tiers (longer queries, or more selective filters) and
MaxScore (exclusions, phrases).

The reference scores every chunk in Python from its stored term frequencies, so a bound
that is too tight in any pruning algorithm (a skipped subset or tier, a dropped
candidate) shows up as a missing or misranked chunk.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

K1, B = 1.2, 0.75
WORDS = [f"w{i:03d}x" for i in range(400)]
RARE = "r999x"
CORRELATED = ["c1x", "c2x", "c3x"]


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


Chunk = tuple[int, dict[str, int], int, dict[str, int]]


@contextmanager
def _collection(database_url: str, texts: list[str]) -> Iterator[tuple[str, list[Chunk]]]:
    """A collection of ``texts``, one chunk each, with metadata {"g": i % 3, "r": i % 50}
    (filters keeping a third and 2 % of the chunks: term coverage and impact tiers); yields
    its name and (chunk_id, tf, length, metadata) per chunk."""
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
                    (collection_id, external_id, content_hash, chunk_count)
                SELECT %(c)s, 'd' || i, 'h', 1 FROM generate_series(1, %(n)s) AS i
                RETURNING document_id, external_id
            )
            INSERT INTO hybridsearch.chunks
                (collection_id, document_id, ordinal, content, metadata, embedding, fts)
            SELECT %(c)s, docs.document_id, 0, t.content,
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
            "SELECT chunk_id, term_freqs, term_count, metadata"
            " FROM hybridsearch.chunks WHERE collection_id = %s",
            (cid,),
        ).fetchall()
        try:
            yield name, [(r[0], r[1], r[2], r[3]) for r in rows]
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


def _reference(
    chunks: list[Chunk], terms: list[str], flt: dict[str, int] | None
) -> list[tuple[int, float]]:
    """Exhaustive Okapi BM25 (Lucene idf) over every chunk, best first, ties by id."""
    n = len(chunks)
    avglen = sum(c[2] for c in chunks) / n
    df = {t: sum(1 for c in chunks if t in c[1]) for t in terms}
    idf = {t: math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in terms if df[t]}
    scored = []
    for chunk_id, tf, length, metadata in chunks:
        if flt is not None and any(metadata.get(k) != v for k, v in flt.items()):
            continue
        score = sum(
            idf[t] * tf[t] * (K1 + 1) / (tf[t] + K1 * (1 - B + B * length / avglen))
            for t in idf
            if t in tf
        )
        if score > 0:
            scored.append((chunk_id, score))
    return sorted(scored, key=lambda s: (-s[1], s[0]))


def _assert_same_top_k(got: list[tuple[int, float]], want: list[tuple[int, float]], k: int) -> None:
    want = want[:k]
    assert len(got) == len(want)
    for (_, g), (_, w) in zip(got, want, strict=True):
        assert g == pytest.approx(w, rel=1e-9)
    # ids agree wherever the score is not tied (float sums may order exact ties apart)
    scores = [w for _, w in want]
    for (gid, _), (wid, w) in zip(got, want, strict=True):
        if sum(1 for s in scores if abs(s - w) <= 1e-9 * w) == 1:
            assert gid == wid


QUERIES = [
    ["w000x"],  # the most common word: every chunk, tf buckets up to 128
    ["w001x", "w002x"],
    ["w010x", "w200x", "w350x"],
    ["w003x", "w030x", "w120x", "w260x", "w399x"],
    [f"w{i:03d}x" for i in range(0, 400, 37)],  # 11 terms, common and rare: impact tiers
    [f"w{i:03d}x" for i in range(5, 12)],  # 7 common terms: impact tiers
    ["w150x", "nosuchword"],
    # a rare word at tf 200: the chance of its high levels underflows a float
    [RARE, "w001x"],
]


@pytest.mark.parametrize("terms", QUERIES, ids=lambda t: "+".join(t)[:40])
@pytest.mark.parametrize("top_k", [1, 10, 50])
@pytest.mark.parametrize("flt", [None, {"g": 1}, {"r": 7}], ids=["all", "third", "2pct"])
def test_plain_word_queries_return_exhaustive_top_k(
    conn: psycopg.Connection,
    corpus: tuple[str, list[Chunk]],
    terms: list[str],
    top_k: int,
    flt: dict[str, int] | None,
) -> None:
    name, chunks = corpus
    got = conn.execute(
        "SELECT chunk_id, keyword_score FROM hybridsearch.search_keyword(%s, %s, %s, %s)"
        " ORDER BY keyword_rank",
        (name, " ".join(terms), top_k, None if flt is None else Jsonb(flt)),
    ).fetchall()
    _assert_same_top_k(got, _reference(chunks, terms, flt), top_k)


@pytest.mark.parametrize("terms", QUERIES[1:6], ids=lambda t: "+".join(t)[:40])
def test_maxscore_path_returns_exhaustive_top_k(
    conn: psycopg.Connection,
    corpus: tuple[str, list[Chunk]],
    terms: list[str],
) -> None:
    """An exclusion sends the query to MaxScore over the full-text index."""
    name, chunks = corpus
    excluded = "w004x"
    got = conn.execute(
        "SELECT chunk_id, keyword_score FROM hybridsearch.search_keyword(%s, %s, 20)"
        " ORDER BY keyword_rank",
        (name, " ".join(terms) + f" -{excluded}"),
    ).fetchall()
    kept = {c[0] for c in chunks if excluded not in c[1]}
    # statistics are the whole collection's; only the candidates are restricted
    want = [s for s in _reference(chunks, terms, None) if s[0] in kept]
    _assert_same_top_k(got, want, 20)


@pytest.mark.parametrize(
    "terms",
    [
        ["w000x"],
        ["w000x", "w001x"],
        ["w002x", "w005x", "w030x"],
        ["w001x", "w003x", "w010x", "w020x", "w050x"],
    ],
    ids=lambda t: "+".join(t),
)
def test_coverage_with_tied_scores_returns_exhaustive_top_k(
    conn: psycopg.Connection, flat_corpus: tuple[str, list[Chunk]], terms: list[str]
) -> None:
    name, chunks = flat_corpus
    got = conn.execute(
        "SELECT chunk_id, keyword_score FROM hybridsearch.search_keyword(%s, %s, 50)"
        " ORDER BY keyword_rank",
        (name, " ".join(terms)),
    ).fetchall()
    _assert_same_top_k(got, _reference(chunks, terms, None), 50)


def test_coverage_visits_use_the_impacts_index_in_a_fresh_session(
    database_url: str, corpus: tuple[str, list[Chunk]]
) -> None:
    """A new session plans its first visits for their actual keys (custom plans): each
    must still be one GIN scan, not a read of the whole partition filtered row by row."""
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
    visits = [plan for plan in notices if "WITH fetched AS MATERIALIZED" in plan]
    assert visits, "no term-coverage visit was planned"
    for plan in visits:
        assert f"Bitmap Index Scan on chunks_{cid}_impacts_idx" in plan, plan
        assert "Filter: ((impacts" not in plan, plan


@pytest.mark.parametrize("terms", [CORRELATED, [*CORRELATED, "w005x"]], ids=lambda t: "+".join(t))
@pytest.mark.parametrize("top_k", [10, 50])
def test_coverage_of_words_that_occur_together_returns_exhaustive_top_k(
    conn: psycopg.Connection,
    correlated_corpus: tuple[str, list[Chunk]],
    terms: list[str],
    top_k: int,
) -> None:
    name, chunks = correlated_corpus
    got = conn.execute(
        "SELECT chunk_id, keyword_score FROM hybridsearch.search_keyword(%s, %s, %s)"
        " ORDER BY keyword_rank",
        (name, " ".join(terms), top_k),
    ).fetchall()
    _assert_same_top_k(got, _reference(chunks, terms, None), top_k)
