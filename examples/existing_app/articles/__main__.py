"""``python -m articles sync | search QUERY``, against APP_DATABASE_URL.

hybridsearch uses the same database (its schema installed by ``hybridsearch db upgrade``).
``sync`` declares the articles table synced and writes what is queued; afterwards the
application's writes are queued by triggers, and ``hybridsearch sync run`` (a long-running
worker) or ``python -m articles sync`` again writes them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from articles.search import run_worker, search_articles, sync_articles
from hybridsearch import HybridSearch, Settings
from hybridsearch.db.migrate import sqlalchemy_url


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m articles")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sync", help="sync the articles table and write its queued rows")
    search = sub.add_parser("search", help="search the published articles")
    search.add_argument("--section")
    search.add_argument("query")
    args = parser.parse_args(argv)

    url = os.environ["APP_DATABASE_URL"]
    settings = Settings.from_env({**os.environ, "HYBRIDSEARCH_DATABASE_URL": url})
    engine = create_engine(sqlalchemy_url(url))
    with HybridSearch(settings) as hs, Session(engine) as session:
        if args.command == "sync":
            queued = sync_articles(hs)
            report = run_worker(hs)
            print(f"{queued} rows queued; {report.describe()}")
        else:
            for hit in search_articles(hs, session, args.query, section=args.section):
                print(f"{hit.rank}\t{hit.article.id}\t{hit.article.title}")
    engine.dispose()


if __name__ == "__main__":
    main()
