"""Run hybridsearch's alembic migrations programmatically.

The migration scripts and SQL files ship inside the package (``hybridsearch.migrations``
and ``hybridsearch.sql``), so an installed wheel can migrate a database without the
source tree.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

from hybridsearch.config import Settings
from hybridsearch.errors import DatabaseError

SCHEMA = "hybridsearch"
VERSION_TABLE = "alembic_version"


def sqlalchemy_url(url: str | None = None) -> str:
    """The SQLAlchemy URL (psycopg 3 driver) for ``url`` or for the configured database."""
    from hybridsearch.db.connection import database_url

    url = url or database_url(Settings.from_env())
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def sql_text(name: str) -> str:
    """The text of one file from ``sql/``."""
    return resources.files("hybridsearch.sql").joinpath(name).read_text(encoding="utf-8")


def run_sql_file(name: str) -> None:
    """Execute a whole ``sql/`` file inside the running migration.

    The file goes to psycopg without parameters, so it may hold many statements and
    ``%`` signs (format() patterns) need no escaping.
    """
    from alembic import op

    driver_connection = op.get_bind().connection.driver_connection
    assert isinstance(driver_connection, psycopg.Connection)
    driver_connection.execute(sql_text(name))


def _script_location() -> str:
    return str(Path(str(resources.files("hybridsearch.migrations"))))


def _config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", _script_location())
    config.attributes["url"] = url
    return config


def _with_connection(url: str, action: str, run: object) -> None:
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        with engine.begin() as connection:
            config = _config(url)
            config.attributes["connection"] = connection
            run(config)  # type: ignore[operator]
    except Exception as exc:  # alembic and SQLAlchemy raise many types; keep the cause
        raise DatabaseError(f"{action} failed: {exc}") from exc
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision``."""
    _with_connection(url, f"upgrade to {revision}", lambda c: command.upgrade(c, revision))


def downgrade(url: str, revision: str = "-1") -> None:
    """Migrate the database at ``url`` down to ``revision`` (``base`` removes everything)."""
    _with_connection(url, f"downgrade to {revision}", lambda c: command.downgrade(c, revision))


def current_revision(url: str) -> str | None:
    """The revision the database is at, or None when hybridsearch is not installed."""
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={"version_table": VERSION_TABLE, "version_table_schema": SCHEMA},
            )
            return context.get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str:
    """The newest revision this code ships."""
    head = ScriptDirectory.from_config(_config("")).get_current_head()
    assert head is not None
    return head
