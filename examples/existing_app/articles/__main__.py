"""``python -m articles index | search QUERY``, against APP_DATABASE_URL.

hybridsearch uses the same database (its schema installed by ``hybridsearch db upgrade``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from articles.search import index_articles, search_articles
from hybridsearch import HybridSearch, Settings
from hybridsearch.db.migrate import sqlalchemy_url


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m articles")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("index", help="index every article in hybridsearch")
    search = sub.add_parser("search", help="search the published articles")
    search.add_argument("--section")
    search.add_argument("query")
    args = parser.parse_args(argv)

    url = os.environ["APP_DATABASE_URL"]
    settings = Settings.from_env({**os.environ, "HYBRIDSEARCH_DATABASE_URL": url})
    engine = create_engine(sqlalchemy_url(url))
    with HybridSearch(settings) as hs, Session(engine) as session:
        if args.command == "index":
            report = index_articles(hs, session)
            print(f"{report.added} added, {report.updated} updated, {report.unchanged} unchanged")
        else:
            for hit in search_articles(hs, session, args.query, section=args.section):
                print(f"{hit.rank}\t{hit.article.id}\t{hit.article.title}")
    engine.dispose()


if __name__ == "__main__":
    main()
