"""Helpers shared by the reliability tests and ``bench/reliability.py``.

Nothing here loads a model: documents are embedded by :class:`HashEmbedder`, whose
vectors are derived from each text's SHA-256, so the database does all the work that is
being measured. Every check runs against PostgreSQL's own catalogs and data.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from hybridsearch.collections import Collection, CollectionSettings
from hybridsearch.db.connection import configure_connection
from hybridsearch.db.store import create_collection
from hybridsearch.models.embedder import Embedder

HASH_MODEL = "reliability-hash"

# A small fixed vocabulary: documents reuse sentences (so the embedding cache and the
# BM25 statistics see repeated text) and every query word occurs in the corpus.
WORDS = (
    *("postgres", "vector", "keyword", "index", "search", "chunk", "rerank", "fusion"),
    *("snapshot", "replica", "tenant", "budget", "latency", "cluster", "partition"),
    *("embedding", "analyzer", "migration", "timeout", "recall", "planner", "storage"),
    *("journal", "checkpoint", "backup", "cursor", "lexeme", "stemming", "ranking", "cache"),
)
_rng = random.Random(7)
SENTENCES = tuple(
    " ".join(_rng.sample(WORDS, _rng.randint(4, 6))).capitalize() + "." for _ in range(48)
)
QUERIES = tuple(" ".join(_rng.sample(WORDS, _rng.randint(1, 3))) for _ in range(64))
# About one sentence per chunk, so a document of 1-5 sentences has several chunks for a
# reader to catch half-written.
CHUNK_SETTINGS = CollectionSettings(chunk_max_tokens=12, chunk_overlap_tokens=0)
DISTANCE_OPERATORS = {"cosine": "<=>", "l2": "<->", "inner_product": "<#>"}


def hash_vector(text: str, dimensions: int) -> npt.NDArray[np.float32]:
    """A deterministic unit vector for ``text``."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    vector = rng.standard_normal(dimensions).astype(np.float32)
    normalized: npt.NDArray[np.float32] = vector / np.linalg.norm(vector)
    return normalized


class HashEmbedder(Embedder):
    """Deterministic unit vectors from each text's SHA-256, without a model.

    Ingest needs an embedder, but these tests measure the database, not torch: the
    vectors only have to be stable (so the embedding cache and re-ingest behave as with
    a real model) and spread over the sphere (so HNSW builds a real graph).
    """

    def __init__(self, dimensions: int) -> None:
        # No weights to export: it states its runtime, which the embedding cache keys by.
        super().__init__(f"{HASH_MODEL}-{dimensions}", backend="torch")
        self._dimensions = dimensions

    @property
    def dimensions(self) -> int:
        return self._dimensions

    def embed_documents(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        items = list(texts)
        if not items:
            return np.empty((0, self._dimensions), dtype=np.float32)
        return np.stack([hash_vector(text, self._dimensions) for text in items])

    def embed_query(self, text: str) -> npt.NDArray[np.float32]:
        return hash_vector(text, self._dimensions)


def document_text(rng: random.Random, max_sentences: int = 5) -> str:
    """1..max_sentences distinct sentences: as many chunks under CHUNK_SETTINGS."""
    return " ".join(rng.sample(SENTENCES, rng.randint(1, max_sentences)))


def connect(url: str) -> psycopg.Connection:
    """An autocommit connection with pgvector registered, as the service's pool makes."""
    conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    configure_connection(conn)
    return conn


def create_test_collection(
    conn: psycopg.Connection, name: str, dimensions: int, *, distance: str = "cosine"
) -> Collection:
    """A collection for :class:`HashEmbedder` vectors (no model is loaded to size it)."""
    return create_collection(
        conn,
        name,
        embedding_model=f"{HASH_MODEL}-{dimensions}",
        dimensions=dimensions,
        distance=distance,  # type: ignore[arg-type]
        settings=CHUNK_SETTINGS,
    )


def with_application_name(url: str, name: str) -> str:
    """``url`` with ``application_name`` set, so pg_stat_activity can tell our backends."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "application_name"]
    query.append(("application_name", name))
    return urlunsplit(parts._replace(query=urlencode(query)))


def with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def create_database(url: str, database: str) -> str:
    """Create an empty database on the server of ``url``; returns its URL."""
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    return with_database(url, database)


def drop_database(url: str, database: str) -> None:
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else 0.0


# -- consistency checks ---------------------------------------------------------------

# Documents whose visible chunks are not exactly chunk_count rows numbered 0..n-1, or
# whose chunks carry other metadata than the document row. Ingest copies the document's
# metadata onto each chunk, and the tests put a version number in it, so old and new
# chunks of a replaced document mixed in one snapshot show up here too.
HALF_VISIBLE_SQL = """
SELECT d.external_id, d.chunk_count, count(c.chunk_id) AS visible,
       count(c.chunk_id) FILTER (WHERE c.metadata <> d.metadata) AS foreign_chunks
FROM hybridsearch.documents d
LEFT JOIN hybridsearch.chunks c
       ON c.collection_id = d.collection_id AND c.document_id = d.document_id
WHERE d.collection_id = %(c)s
GROUP BY d.document_id, d.external_id, d.chunk_count
HAVING count(c.chunk_id) <> d.chunk_count
    OR coalesce(max(c.ordinal) + 1, 0) <> d.chunk_count
    OR count(c.chunk_id) FILTER (WHERE c.metadata <> d.metadata) > 0
ORDER BY d.external_id
LIMIT 20
"""

ORPHAN_CHUNKS_SQL = """
SELECT count(*) FROM hybridsearch.chunks c
WHERE c.collection_id = %(c)s AND NOT EXISTS (
    SELECT 1 FROM hybridsearch.documents d
    WHERE d.collection_id = c.collection_id AND d.document_id = c.document_id)
"""

# BM25 statistics are kept by statement triggers in the ingest transaction: after any
# crash or under any concurrency they must equal what the chunks themselves say.
STATS_SQL = """
SELECT (SELECT coalesce(sum(s.chunks), 0) FROM hybridsearch.collection_stats s
         WHERE s.collection_id = %(c)s),
       (SELECT count(*) FROM hybridsearch.chunks c WHERE c.collection_id = %(c)s),
       (SELECT coalesce(sum(s.terms), 0) FROM hybridsearch.collection_stats s
         WHERE s.collection_id = %(c)s),
       (SELECT coalesce(sum(c.term_count), 0) FROM hybridsearch.chunks c
         WHERE c.collection_id = %(c)s)
"""

TERM_DF_SQL = """
SELECT count(*) FROM (
    SELECT t.term, sum(t.df) AS df FROM hybridsearch.term_stats t
    WHERE t.collection_id = %(c)s GROUP BY t.term HAVING sum(t.df) <> 0
) AS kept
FULL JOIN (
    SELECT lexeme AS term, count(*) AS df
    FROM hybridsearch.chunks c, unnest(pg_catalog.tsvector_to_array(c.fts)) AS lexeme
    WHERE c.collection_id = %(c)s GROUP BY lexeme
) AS actual USING (term)
WHERE kept.df IS DISTINCT FROM actual.df
"""


def half_visible_documents(conn: psycopg.Connection, collection_id: int) -> list[str]:
    """Documents seen with some but not all of their chunks (in this statement's snapshot)."""
    rows = conn.execute(HALF_VISIBLE_SQL, {"c": collection_id}).fetchall()
    return [
        f"document {ext!r}: chunk_count {count}, {visible} chunks visible, "
        f"{foreign} chunks of another version"
        for ext, count, visible, foreign in rows
    ]


def consistency_problems(
    conn: psycopg.Connection, collection_id: int, *, stats: bool = True
) -> list[str]:
    """Everything wrong with one collection's rows; run it inside one snapshot
    (a REPEATABLE READ transaction) when writers may be active."""
    problems = half_visible_documents(conn, collection_id)
    row = conn.execute(ORPHAN_CHUNKS_SQL, {"c": collection_id}).fetchone()
    if row and row[0]:
        problems.append(f"{row[0]} chunks without a document")
    if stats:
        stat = conn.execute(STATS_SQL, {"c": collection_id}).fetchone()
        assert stat is not None
        if stat[0] != stat[1] or stat[2] != stat[3]:
            problems.append(
                f"BM25 totals drifted: stats say {stat[0]} chunks/{stat[2]} terms, "
                f"the chunks hold {stat[1]}/{stat[3]}"
            )
        df = conn.execute(TERM_DF_SQL, {"c": collection_id}).fetchone()
        if df and df[0]:
            problems.append(f"{df[0]} terms whose document frequency drifted")
    return problems


def stored_documents(conn: psycopg.Connection, collection_id: int) -> dict[str, str]:
    """external id -> content hash of every stored document."""
    rows = conn.execute(
        "SELECT external_id, content_hash FROM hybridsearch.documents WHERE collection_id = %s",
        (collection_id,),
    ).fetchall()
    return {external_id: digest for external_id, digest in rows}


def amcheck_indexes(conn: psycopg.Connection) -> tuple[int, list[str]]:
    """Verify every B-tree (and GIN, where amcheck has gin_index_check) index of schema
    hybridsearch, partitions included; returns (indexes checked, problems).

    Uses bt_index_parent_check with heapallindexed and rootdescend, which takes a
    ShareLock: run it only while nothing writes.
    """
    conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
    has_gin = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_proc WHERE proname = 'gin_index_check')"
    ).fetchone()
    indexes = conn.execute(
        """
        SELECT c.oid::regclass::text, a.amname
        FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_am a ON a.oid = c.relam
        WHERE c.relnamespace = 'hybridsearch'::regnamespace AND c.relkind = 'i'
          AND a.amname IN ('btree', 'gin')
        ORDER BY 1
        """
    ).fetchall()
    checked = 0
    problems: list[str] = []
    for name, method in indexes:
        if method == "btree":
            statement = (
                "SELECT bt_index_parent_check(%s::regclass,"
                " heapallindexed => true, rootdescend => true)"
            )
        elif has_gin and has_gin[0]:
            statement = "SELECT gin_index_check(%s::regclass)"
        else:
            continue
        try:
            conn.execute(statement, (name,))
        except psycopg.Error as exc:
            problems.append(f"amcheck {name}: {exc.sqlstate} {exc}")
        checked += 1
    return checked, problems


def hnsw_recall(
    conn: psycopg.Connection,
    collection: Collection,
    queries: Sequence[npt.NDArray[np.float32]],
    k: int = 10,
) -> tuple[float, bool]:
    """Mean recall@k of ``hybridsearch.search_vector`` (forced onto the HNSW index)
    against exact search (index scans off), and whether the HNSW plan was used.

    Recall counts a returned chunk as correct when its distance is within the exact k-th
    distance (as ann-benchmarks does): chunks with the same text share a vector, and
    ties among them may come back in any order.
    """
    cast = sql.SQL("vector({})").format(sql.Literal(collection.dimensions))
    operator = sql.SQL(DISTANCE_OPERATORS[collection.distance])
    nearest = sql.SQL(
        "SELECT c.embedding::{cast} {op} %(q)s::{cast} FROM hybridsearch.chunks c"
        " WHERE c.collection_id = %(c)s ORDER BY 1 LIMIT %(k)s"
    ).format(cast=cast, op=operator)
    index_shape = sql.SQL(
        "EXPLAIN SELECT c.chunk_id FROM hybridsearch.chunks c WHERE c.collection_id = %(c)s"
        " ORDER BY c.embedding::{cast} {op} %(q)s::{cast} LIMIT %(k)s"
    ).format(cast=cast, op=operator)
    # Freshly written partitions have no statistics, and then a sort looks cheaper.
    conn.execute("ANALYZE hybridsearch.chunks")
    recalls = []
    index_used = True
    for query in queries:
        params = {"c": collection.collection_id, "q": query, "k": k}
        with conn.transaction():
            conn.execute("SET LOCAL enable_seqscan = off")
            plan = conn.execute(index_shape, params).fetchall()
            index_used &= any("embedding_idx" in line for (line,) in plan)
            found = conn.execute(
                "SELECT vector_distance FROM hybridsearch.search_vector(%(n)s, %(q)s, %(k)s)",
                {"n": collection.name, **params},
            ).fetchall()
        with conn.transaction():
            conn.execute("SET LOCAL enable_indexscan = off")
            conn.execute("SET LOCAL enable_bitmapscan = off")
            exact = conn.execute(nearest, params).fetchall()
        if exact:
            kth = exact[-1][0] + 1e-6
            recalls.append(sum(1 for (d,) in found if d <= kth) / len(exact))
    return (float(np.mean(recalls)) if recalls else 1.0), index_used


# -- schema and data fingerprint ------------------------------------------------------

_USER_SCHEMAS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
    " AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'"
)


def database_fingerprint(conn: psycopg.Connection) -> dict[str, Any]:
    """Relations, functions, types, roles, extensions and a checksum of every table's rows
    outside the system schemas: equal fingerprints mean nothing was created, dropped,
    redefined or written."""
    relations = conn.execute(
        "SELECT n.nspname, c.relname, c.relkind FROM pg_catalog.pg_class c"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        f" WHERE {_USER_SCHEMAS} ORDER BY 1, 2"
    ).fetchall()
    functions = conn.execute(
        "SELECT p.oid::regprocedure::text, md5(pg_catalog.pg_get_functiondef(p.oid))"
        " FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace"
        f" WHERE {_USER_SCHEMAS} AND p.prokind IN ('f', 'p') ORDER BY 1"
    ).fetchall()
    types = conn.execute(
        "SELECT t.oid::regtype::text FROM pg_catalog.pg_type t"
        " JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace"
        f" WHERE {_USER_SCHEMAS} ORDER BY 1"
    ).fetchall()
    roles = conn.execute("SELECT rolname FROM pg_catalog.pg_roles ORDER BY 1").fetchall()
    extensions = conn.execute(
        "SELECT extname, extversion FROM pg_catalog.pg_extension ORDER BY 1"
    ).fetchall()
    data = {}
    for schema, name, kind in relations:
        if kind != "r":
            continue
        table = sql.Identifier(schema, name)
        data[f"{schema}.{name}"] = conn.execute(
            sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
                " FROM {} AS t"
            ).format(table)
        ).fetchone()
    return {
        "relations": relations,
        "functions": functions,
        "types": types,
        "roles": roles,
        "extensions": extensions,
        "data": data,
    }
