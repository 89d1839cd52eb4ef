"""The keyword branch is Okapi BM25: congruent with a reference, with exact statistics."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import bm25s
import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from hybridsearch.eval.beir import load_qrels, load_queries

CORPUS_SIZE = 800
QUERIES = 120


def _add_chunks(conn: psycopg.Connection, collection_id: int, docs: list[tuple[str, str]]) -> None:
    """Insert one-chunk documents through SQL only, analysed in the database."""
    conn.execute(
        """
        WITH docs AS (
            INSERT INTO hybridsearch.documents
                (collection_id, external_id, content_hash, chunk_count)
            SELECT %(c)s, d.id, 'h', 1 FROM unnest(%(ids)s::text[]) AS d(id)
            RETURNING document_id, external_id
        )
        INSERT INTO hybridsearch.chunks (collection_id, document_id, ordinal, content, metadata,
                                         embedding, fts)
        SELECT %(c)s, docs.document_id, 0, t.content, jsonb_build_object('id', t.id),
               '[1,0,0]', a.fts
        FROM unnest(%(ids)s::text[], %(texts)s::text[]) AS t(id, content)
        JOIN docs ON docs.external_id = t.id
        CROSS JOIN LATERAL (
            SELECT hybridsearch.document_tsvector('mixed', t.content) AS fts OFFSET 0
        ) AS a
        """,
        {"c": collection_id, "ids": [d for d, _ in docs], "texts": [t for _, t in docs]},
    )


@pytest.fixture(scope="module")
def scifact_keyword(database_url: str, scifact_dir: Path) -> Iterator[str]:
    name = f"bm25_{uuid.uuid4().hex[:8]}"
    docs = []
    with (scifact_dir / "corpus.jsonl").open() as lines:
        for line in lines:
            record = json.loads(line)
            docs.append((record["_id"], f"{record['title']}\n\n{record['text']}"))
            if len(docs) == CORPUS_SIZE:
                break
    with psycopg.connect(database_url, autocommit=True) as conn:
        collection_id = conn.execute(
            "SELECT (hybridsearch.create_collection(%s, 'none', 3)).collection_id", (name,)
        ).fetchone()[0]
        _add_chunks(conn, collection_id, docs)
        yield name
        conn.execute("SELECT hybridsearch.drop_collection(%s)", (name,))


def _reference(conn: psycopg.Connection, name: str) -> tuple[list[str], bm25s.BM25]:
    """bm25s fed exactly our tokens: each chunk's lexemes repeated by their frequency."""
    rows = conn.execute(
        "SELECT d.external_id, c.term_freqs FROM hybridsearch.chunks c"
        " JOIN hybridsearch.documents d USING (collection_id, document_id)"
        " JOIN hybridsearch.collections k USING (collection_id) WHERE k.name = %s"
        " ORDER BY c.chunk_id",
        (name,),
    ).fetchall()
    ids = [r[0] for r in rows]
    tokens = [[term for term, tf in r[1].items() for _ in range(tf)] for r in rows]
    retriever = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
    retriever.index(tokens, show_progress=False)
    return ids, retriever


# One algorithm of search_keyword called directly, with the statistics search_keyword
# would hand it (see tests/sql/test_keyword_pruning.py), top 10.
ALGORITHM = """
SELECT r.chunk_id, r.score, r.n
FROM hybridsearch.collections AS k
CROSS JOIN LATERAL hybridsearch.parse_keyword_query(k.analyzer, %(query)s) AS q
CROSS JOIN LATERAL hybridsearch.keyword_statistics(k.collection_id, q.terms) AS s
CROSS JOIN LATERAL hybridsearch.{}(
    k.collection_id, s.terms, s.idf, s.max_tf, k.bm25_k1, k.bm25_b, s.avglen, s.min_length,
    s.max_length, s.chunks, 10, q.required, q.excluded, NULL, NULL)
    WITH ORDINALITY AS r(chunk_id, score, n)
WHERE k.name = %(name)s
"""


@pytest.mark.parametrize(
    "entry", ["search_keyword", "keyword_topk_coverage", "keyword_topk_impacts"]
)
def test_congruent_with_reference_bm25(
    conn: psycopg.Connection, scifact_keyword: str, scifact_dir: Path, entry: str
) -> None:
    ids, reference = _reference(conn, scifact_keyword)
    queries = load_queries(scifact_dir / "queries.jsonl")
    qrels = load_qrels(scifact_dir / "qrels" / "train.tsv")
    ranked = (
        "SELECT chunk_id, keyword_score AS score, keyword_rank AS n"
        " FROM hybridsearch.search_keyword(%(name)s, %(query)s, 10)"
        if entry == "search_keyword"
        else sql.SQL(ALGORITHM).format(sql.Identifier(entry)).as_string(conn)
    )
    overlaps = []
    for qid in list(qrels)[:QUERIES]:
        terms = conn.execute(
            "SELECT (hybridsearch.parse_keyword_query('mixed', %s)).terms", (queries[qid],)
        ).fetchone()[0]
        if entry == "keyword_topk_coverage" and len(terms) > 8:
            continue  # what term coverage takes at most
        ours = conn.execute(
            f"SELECT d.external_id, k.score FROM ({ranked}) k"
            " JOIN hybridsearch.chunks c USING (chunk_id)"
            " JOIN hybridsearch.documents d USING (collection_id, document_id)"
            " ORDER BY k.n",
            {"name": scifact_keyword, "query": queries[qid]},
        ).fetchall()
        scores = reference.get_scores(terms)
        top = np.argsort(-scores, kind="stable")[:10]
        expected = [ids[i] for i in top if scores[i] > 0]
        overlaps.append(len({d for d, _ in ours} & set(expected)) / max(len(expected), 1))
        # Same scores up to Lucene's dropped (k1 + 1) factor.
        by_id = dict(zip(ids, scores, strict=True))
        for doc, score in ours:
            assert score == pytest.approx(by_id[doc] * 2.2, rel=1e-6)
    assert len(overlaps) >= 20
    assert sum(overlaps) / len(overlaps) >= 0.95


def _stats(conn: psycopg.Connection, name: str) -> tuple[object, ...]:
    """(chunks, terms, {term: df}) from the statistics tables and recounted from chunks."""
    kept = conn.execute(
        "SELECT sum(s.chunks), sum(s.terms) FROM hybridsearch.collection_stats s"
        " JOIN hybridsearch.collections c USING (collection_id) WHERE c.name = %s",
        (name,),
    ).fetchone()
    actual = conn.execute(
        "SELECT count(*), sum(k.term_count) FROM hybridsearch.chunks k"
        " JOIN hybridsearch.collections c USING (collection_id) WHERE c.name = %s",
        (name,),
    ).fetchone()
    df_kept = dict(
        conn.execute(
            "SELECT t.term, sum(t.df) FROM hybridsearch.term_stats t"
            " JOIN hybridsearch.collections c USING (collection_id) WHERE c.name = %s"
            " GROUP BY t.term HAVING sum(t.df) <> 0",
            (name,),
        ).fetchall()
    )
    df_actual = dict(
        conn.execute(
            "SELECT lexeme, count(*) FROM hybridsearch.chunks k"
            " JOIN hybridsearch.collections c USING (collection_id),"
            " unnest(tsvector_to_array(k.fts)) AS lexeme WHERE c.name = %s GROUP BY lexeme",
            (name,),
        ).fetchall()
    )
    return (tuple(kept), tuple(actual), df_kept == df_actual, len(df_actual))


def test_statistics_stay_exact_under_concurrent_writers(database_url: str) -> None:
    name = f"stats_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        cid = admin.execute(
            "SELECT (hybridsearch.create_collection(%s, 'none', 3)).collection_id", (name,)
        ).fetchone()[0]
        try:
            # Two writers in open transactions at once, on different backends (shards),
            # then a third that rolls back: only committed work may count.
            with psycopg.connect(database_url) as w1, psycopg.connect(database_url) as w2:
                _add_chunks(w1, cid, [(f"a{i}", f"alpha beta gamma {i}") for i in range(50)])
                _add_chunks(w2, cid, [(f"b{i}", f"beta delta {i} delta") for i in range(30)])
                w2.commit()
                w1.commit()
            with psycopg.connect(database_url) as w3:
                _add_chunks(w3, cid, [("c0", "epsilon beta")])
                w3.rollback()
            kept, actual, df_equal, terms = _stats(admin, name)
            assert kept == actual == (80, 80 * 4)
            assert df_equal and terms == 4 + 50  # alpha beta gamma delta and 0..49
            shards = admin.execute(
                "SELECT count(DISTINCT shard) FROM hybridsearch.collection_stats"
                " WHERE collection_id = %s",
                (cid,),
            ).fetchone()[0]
            assert shards >= 1
            # Deleting documents (cascading to chunks) subtracts their statistics.
            admin.execute(
                "DELETE FROM hybridsearch.documents WHERE collection_id = %s"
                " AND external_id LIKE 'a%%'",
                (cid,),
            )
            kept, actual, df_equal, _ = _stats(admin, name)
            assert kept == actual == (30, 30 * 4)
            assert df_equal
            idf = admin.execute(
                "SELECT keyword_score FROM hybridsearch.search_keyword(%s, 'delta', 1)", (name,)
            ).fetchone()[0]
            # every chunk holds delta twice in 4 tokens: df = N = 30
            expected = math.log(1 + 0.5 / 30.5) * 2 * 2.2 / (2 + 1.2)
            assert idf == pytest.approx(expected, rel=1e-9)
        finally:
            admin.execute("SELECT hybridsearch.drop_collection(%s)", (name,))


def test_updates_in_place_are_refused(conn: psycopg.Connection, scifact_keyword: str) -> None:
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="cannot be updated"):
        conn.execute(
            "UPDATE hybridsearch.chunks SET content = 'x' WHERE collection_id ="
            " (SELECT collection_id FROM hybridsearch.collections WHERE name = %s)",
            (scifact_keyword,),
        )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('"cerebral white matter"', "phrase"),
        ("cells -cancer", "exclude"),
        ("magnetic OR resonance", "or"),
    ],
)
def test_query_syntax(
    conn: psycopg.Connection, scifact_keyword: str, query: str, expected: str
) -> None:
    rows = conn.execute(
        "SELECT c.content FROM hybridsearch.search_keyword(%s, %s, 20) k"
        " JOIN hybridsearch.chunks c USING (chunk_id)",
        (scifact_keyword, query),
    ).fetchall()
    texts = [r[0].lower() for r in rows]
    assert texts
    if expected == "phrase":
        assert all("cerebral white matter" in t for t in texts)
    elif expected == "exclude":
        assert all("cell" in t and "cancer" not in t for t in texts)
    else:
        assert all("magnetic" in t or "resonance" in t for t in texts)
        both = conn.execute(
            "SELECT count(*) FROM hybridsearch.search_keyword(%s, 'magnetic resonance', 20)",
            (scifact_keyword,),
        ).fetchone()[0]
        assert both == len(texts)  # OR is the default: the operator changes nothing


@pytest.mark.parametrize(
    "query",
    [
        "",
        "   ",
        "&|!()<->:*",
        '"',
        '"""',
        "-",
        "--",
        "- -x",
        "'; DROP TABLE x; --",
        "\\",
        "a" * 5000,
        " ".join(["word"] * 2000),
        "OR OR",
        '-""',
        "\u3000",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    ],
)
def test_hostile_queries_never_raise(
    conn: psycopg.Connection, scifact_keyword: str, query: str
) -> None:
    rows = conn.execute(
        "SELECT count(*) FROM hybridsearch.search_keyword(%s, %s, 5)", (scifact_keyword, query)
    ).fetchone()
    assert rows is not None and 0 <= rows[0] <= 5


def test_filter_restricts_keyword_results(conn: psycopg.Connection, scifact_keyword: str) -> None:
    first = conn.execute(
        "SELECT c.metadata FROM hybridsearch.search_keyword(%s, 'cells', 1) k"
        " JOIN hybridsearch.chunks c USING (chunk_id)",
        (scifact_keyword,),
    ).fetchone()[0]
    filtered = conn.execute(
        "SELECT count(*) FROM hybridsearch.search_keyword(%s, 'cells', 10, %s)",
        (scifact_keyword, Jsonb(first)),
    ).fetchone()[0]
    assert filtered == 1


def test_impact_keys_hold_tiers_and_tf_levels(conn: psycopg.Connection) -> None:
    """Per term: one tier key (tf bucket, length bucket), the lexeme itself, and one
    '>=f' key per tf bucket from 2 up to the term's own; tf 9 and 10 share bucket 9."""
    keys = conn.execute(
        "SELECT hybridsearch.impact_keys(%s::tsvector)",
        ("once:1 thrice:2,3,4 often:5,6,7,8,9,10,11,12,13,14",),
    ).fetchone()[0]  # type: ignore[index]
    length_bucket = math.floor(2 * math.log2(14))  # 14 tokens
    levels = ["thrice", ">=2 thrice", ">=3 thrice"]
    levels += ["often"] + [f">={f} often" for f in (2, 3, 4, 5, 6, 7, 8, 9)]
    tiers = [f"1 {length_bucket} once", f"3 {length_bucket} thrice", f"9 {length_bucket} often"]
    assert sorted(keys) == sorted([*tiers, "once", *levels])
