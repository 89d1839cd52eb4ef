"""Index the application's articles in hybridsearch and search them as Article rows.

Each article is one hybridsearch document whose external id is the article's primary
key, so search results join back to ``articles`` in SQL: fused candidates, the best
chunk per article, the application's own conditions and the rows, in one query.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Text, cast, func, select
from sqlalchemy.orm import Session

from articles.models import Article
from hybridsearch import Collection, CollectionNotFoundError, Document, HybridSearch, IngestReport
from hybridsearch.db import tables
from hybridsearch.search_input import validate_query

COLLECTION = "articles"


@dataclass(frozen=True)
class ArticleHit:
    article: Article
    rank: int
    score: float


def ensure_collection(hs: HybridSearch) -> Collection:
    try:
        return hs.get_collection(COLLECTION)
    except CollectionNotFoundError:
        return hs.create_collection(COLLECTION)


def as_document(article: Article) -> Document:
    return Document(
        id=str(article.id),
        text=f"{article.title}\n\n{article.body}",
        metadata={"section": article.section},
    )


def index_articles(hs: HybridSearch, session: Session) -> IngestReport:
    """Index every article; unchanged ones are skipped (content hash), so re-runs are cheap."""
    ensure_collection(hs)
    articles = session.scalars(select(Article).order_by(Article.id))
    return hs.add_documents(COLLECTION, (as_document(a) for a in articles))


def unindex_articles(hs: HybridSearch, ids: Iterable[int]) -> int:
    return hs.delete_documents(COLLECTION, [str(i) for i in ids])


def search_articles(
    hs: HybridSearch,
    session: Session,
    query: str,
    *,
    limit: int = 5,
    top_k: int = 50,
    section: str | None = None,
) -> list[ArticleHit]:
    """Published articles for ``query``, best first, in one SQL statement."""
    query = validate_query(query, hs.settings.max_query_chars)
    embedding = hs.embedder(hs.get_collection(COLLECTION)).embed_query(query)
    hits = tables.search_hybrid(
        COLLECTION,
        embedding,
        query,
        top_k=top_k,
        filter={"section": section} if section else None,
    )
    best = (
        select(
            hits.c.document_id,
            func.min(hits.c.fused_rank).label("rank"),
            func.max(hits.c.fused_score).label("score"),
        )
        .group_by(hits.c.document_id)
        .subquery("best")
    )
    rows = session.execute(
        select(Article, best.c.rank, best.c.score)
        .join(best, best.c.document_id == cast(Article.id, Text))
        .where(Article.published)
        .order_by(best.c.rank)
        .limit(limit)
    )
    return [ArticleHit(article, rank, score) for article, rank, score in rows]
