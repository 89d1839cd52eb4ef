"""Each bad input gets a precise hybridsearch error and leaves stored data untouched."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

from hybridsearch import (
    CollectionNotFoundError,
    Document,
    DocumentError,
    EmbeddingError,
    FilterError,
    HybridSearch,
    HybridSearchError,
    InvalidInputError,
    QueryError,
)


def _fingerprint(conn: psycopg.Connection) -> tuple[Any, ...]:
    """A checksum of every stored row the service owns."""
    return tuple(
        conn.execute(
            f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
            f" FROM hybridsearch.{table} t"
        ).fetchone()
        for table in ("collections", "documents", "chunks")
    )


@pytest.fixture
def stocked(hs: HybridSearch, collection_name: str) -> Iterator[str]:
    hs.create_collection(collection_name)
    hs.add_documents(
        collection_name,
        [
            Document("a", "Postgres keeps the data safe."),
            Document("b", "Rerankers sort candidates."),
        ],
    )
    yield collection_name


BAD_SEARCHES: list[tuple[str, type[HybridSearchError], str, Callable[[HybridSearch, str], Any]]] = [
    (
        "unknown collection",
        CollectionNotFoundError,
        "does not exist",
        lambda hs, c: hs.search("no_such_collection", "data"),
    ),
    ("empty query", QueryError, "empty", lambda hs, c: hs.search(c, "   ")),
    ("1 MB query", QueryError, "limit", lambda hs, c: hs.search(c, "a" * 1_048_576)),
    (
        "operators only",
        QueryError,
        "no letters or digits",
        lambda hs, c: hs.search(c, '& | ! <-> ( ) " - :*'),
    ),
    ("NUL in query", QueryError, "NUL", lambda hs, c: hs.search(c, "data\x00base")),
    ("lone surrogate", QueryError, "Unicode", lambda hs, c: hs.search(c, "data \ud800")),
    (
        "invalid filter JSON",
        FilterError,
        "not valid JSON",
        lambda hs, c: hs.search(c, "data", filter="{lang: en"),
    ),
    (
        "filter not an object",
        FilterError,
        "JSON object",
        lambda hs, c: hs.search(c, "data", filter="[1, 2]"),
    ),
    ("top_k zero", InvalidInputError, "top_k", lambda hs, c: hs.search(c, "data", top_k=0)),
    ("top_k negative", InvalidInputError, "top_k", lambda hs, c: hs.search(c, "data", top_k=-5)),
    (
        "top_n above top_k",
        InvalidInputError,
        "cannot exceed",
        lambda hs, c: hs.search(c, "data", top_k=3, top_n=4),
    ),
    ("unknown mode", InvalidInputError, "mode", lambda hs, c: hs.search(c, "data", mode="fuzzy")),  # type: ignore[arg-type]
    (
        "wrong dimension",
        EmbeddingError,
        "expects 384",
        lambda hs, c: hs.search(c, "data", query_embedding=np.ones(512, dtype=np.float32)),
    ),
    (
        "NaN vector",
        EmbeddingError,
        "NaN",
        lambda hs, c: hs.search(c, "data", query_embedding=np.full(384, np.nan, dtype=np.float32)),
    ),
    (
        "inf vector",
        EmbeddingError,
        "NaN or infinity",
        lambda hs, c: hs.search(c, "data", query_embedding=np.full(384, np.inf, dtype=np.float32)),
    ),
    (
        "unknown fusion",
        InvalidInputError,
        "zscore, rrf or weighted",
        lambda hs, c: hs.search(c, "data", fusion="max"),
    ),
]


@pytest.mark.parametrize(
    ("label", "error", "message", "call"), BAD_SEARCHES, ids=[b[0] for b in BAD_SEARCHES]
)
def test_bad_search_input(
    hs: HybridSearch,
    stocked: str,
    conn: psycopg.Connection,
    label: str,
    error: type[HybridSearchError],
    message: str,
    call: Callable[[HybridSearch, str], Any],
) -> None:
    before = _fingerprint(conn)
    with pytest.raises(error, match=message):
        call(hs, stocked)
    assert _fingerprint(conn) == before
    # the service still answers afterwards
    assert hs.search(stocked, "data", rerank=False).results


BAD_DOCUMENTS: list[tuple[str, Any, str]] = [
    ("oversized", Document("big", "x " * 1_500_000), "limit"),
    ("empty text", Document("e", "   "), "no text"),
    ("empty id", Document("", "text"), "id"),
    ("NUL in text", Document("n", "bad\x00text"), "NUL"),
    ("metadata not an object", Document("m", "text", ["a"]), "JSON object"),  # type: ignore[arg-type]
    ("metadata NaN", Document("m", "text", {"x": float("nan")}), "JSON"),
    ("not a document", {"id": "x", "text": "y"}, "Document"),
]


@pytest.mark.parametrize(
    ("label", "document", "message"), BAD_DOCUMENTS, ids=[b[0] for b in BAD_DOCUMENTS]
)
def test_bad_documents(
    hs: HybridSearch,
    stocked: str,
    conn: psycopg.Connection,
    label: str,
    document: Any,
    message: str,
) -> None:
    before = _fingerprint(conn)
    with pytest.raises(DocumentError, match=message):
        # a good document in the same batch must not land either
        hs.add_documents(stocked, [Document("good", "A fine document."), document])
    assert _fingerprint(conn) == before


def test_unknown_collection_for_documents(hs: HybridSearch, conn: psycopg.Connection) -> None:
    before = _fingerprint(conn)
    with pytest.raises(CollectionNotFoundError):
        hs.add_documents("no_such_collection", [Document("a", "text")])
    with pytest.raises(CollectionNotFoundError):
        hs.delete_documents("no_such_collection", ["a"])
    assert _fingerprint(conn) == before


def test_bad_collection_definitions(
    hs: HybridSearch, stocked: str, conn: psycopg.Connection
) -> None:
    from hybridsearch import CollectionExistsError

    before = _fingerprint(conn)
    with pytest.raises(CollectionExistsError, match="already exists"):
        hs.create_collection(stocked)
    with pytest.raises(InvalidInputError, match="invalid collection name"):
        hs.create_collection("bad name; drop table x")
    with pytest.raises(InvalidInputError, match="unknown analyzer"):
        hs.create_collection("fine_name_x", analyzer="klingon")
    assert _fingerprint(conn) == before


def test_nul_in_ids_is_an_input_error(
    hs: HybridSearch, stocked: str, conn: psycopg.Connection
) -> None:
    before = _fingerprint(conn)
    with pytest.raises(InvalidInputError, match="NUL"):
        hs.delete_documents(stocked, ["a\x00b"])
    assert _fingerprint(conn) == before
