"""Alembic environment for hybridsearch.

Everything lives in schema ``hybridsearch``, including alembic's own version table,
so an application's ``public.alembic_version`` is never touched and the two histories
coexist in one database.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool, text

from hybridsearch.db.migrate import SCHEMA, VERSION_TABLE, sqlalchemy_url


def _run(connection: Connection) -> None:
    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    context.configure(
        connection=connection,
        version_table=VERSION_TABLE,
        version_table_schema=SCHEMA,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Use the connection handed over by hybridsearch, or open one from the settings."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(sqlalchemy_url(), poolclass=pool.NullPool)
    with engine.begin() as conn:
        _run(conn)


if context.is_offline_mode():
    raise SystemExit("hybridsearch migrations run online only: they execute SQL files")
run_migrations_online()
