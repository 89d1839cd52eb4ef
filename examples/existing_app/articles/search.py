"""Keep the application's articles searchable and search them as Article rows.

The application declares once that ``articles`` is synced into a collection
(:func:`sync_articles`); from then on its ordinary INSERT, UPDATE and DELETE statements
queue the rows they change, and the worker (``hybridsearch sync run``, or
:func:`run_worker`) writes them. Each article is one hybridsearch document whose external
id is the article's primary key, so search results join back to ``articles`` in SQL:
fused candidates, the best chunk per article, the application's own conditions and the
rows, in one query.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Text, cast, func, select
from sqlalchemy.orm import Session

from articles.models import Article
from hybridsearch import Collection, CollectionNotFoundError, HybridSearch
from hybridsearch.db import tables
from hybridsearch.search_input import validate_query
from hybridsearch.sync.worker import RoundReport

COLLECTION = "articles"
TABLE = "public.articles"


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


def sync_articles(hs: HybridSearch) -> int:
    """Sync the articles table into the collection (the title and body are the text, the
    section the metadata); the rows already there are queued. Declaring it again is
    harmless. Returns how many rows were queued."""
    ensure_collection(hs)
    return hs.sync_table(
        COLLECTION,
        TABLE,
        id_column="id",
        text_columns=["title", "body"],
        metadata_columns=["section"],
    )


def run_worker(hs: HybridSearch) -> RoundReport:
    """Write every queued article change into the collection, then return."""
    return hs.sync_run(once=True)


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
