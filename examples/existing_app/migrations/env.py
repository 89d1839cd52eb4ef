"""Alembic environment of the example application: its tables, its version table.

``target_metadata`` is the application's own ``Base.metadata``; hybridsearch's models
(:mod:`hybridsearch.db.tables`) sit on a separate MetaData in schema ``hybridsearch``,
and autogenerate compares the default schema only, so it never proposes to create or
drop hybridsearch's tables.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool

from articles.models import Base


def _url() -> str:
    url = context.config.get_main_option("sqlalchemy.url") or os.environ.get("APP_DATABASE_URL")
    if not url:
        raise SystemExit("set APP_DATABASE_URL to the application's database")
    # The psycopg 3 driver, which hybridsearch uses too.
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def run_migrations_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
