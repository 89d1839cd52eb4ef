"""Run hybridsearch's alembic migrations programmatically.

The migration scripts and SQL files ship inside the package (``hybridsearch.migrations``
and ``hybridsearch.sql``), so an installed wheel can migrate a database without the
source tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

from hybridsearch.config import Settings
from hybridsearch.db import functions
from hybridsearch.db.functions import FunctionDrift
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
    _migration_connection().execute(sql_text(name))


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


def _migration_connection() -> psycopg.Connection:
    from alembic import op

    driver_connection = op.get_bind().connection.driver_connection
    assert isinstance(driver_connection, psycopg.Connection)
    return driver_connection


def install_functions(revision: str) -> None:
    """Migration step (up or down): make the schema's functions exactly ``revision``'s."""
    functions.replace_all(_migration_connection(), revision)


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision``.

    At head, functions whose definitions differ from this package's current sources
    (a database migrated by a development build, or edited by hand) are reinstalled, so
    that a database at head always runs the package's functions.
    """
    _with_connection(url, f"upgrade to {revision}", lambda c: command.upgrade(c, revision))
    if revision == "head" and functions_drift(url):
        _reinstall_functions(url)


def _reinstall_functions(url: str) -> None:
    try:
        with psycopg.connect(url) as conn, conn.transaction():
            functions.replace_all(conn)
    except psycopg.Error as exc:
        raise DatabaseError(f"reinstalling the functions failed: {exc}") from exc


def functions_drift(url: str) -> FunctionDrift | None:
    """How the database's functions differ from the package's; None when this role may
    not replace them (only their owner or the migrator can), so they were not compared."""
    with psycopg.connect(url) as conn:
        try:
            return functions.drift(conn)
        except psycopg.errors.InsufficientPrivilege:
            return None


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database's hybridsearch schema stands against this package."""

    revision: str | None
    head: str
    drift: FunctionDrift | None  # None: not compared (see functions_drift)

    @property
    def ready(self) -> bool:
        return self.problem is None

    @property
    def problem(self) -> str | None:
        """Why the database is not ready, and the command that fixes it."""
        fix = "run `hybridsearch db upgrade`"
        if self.revision is None:
            return f"hybridsearch is not installed in this database; {fix}"
        if self.revision != self.head:
            return f"the schema is at revision {self.revision}, this code needs {self.head}; {fix}"
        if self.drift:
            return (
                f"the schema is at revision {self.head} but its functions differ from this "
                f"package's ({self.drift.describe()}); {fix}, which reinstalls them"
            )
        return None


def schema_status(url: str) -> SchemaStatus:
    """The database's revision and whether its functions are this package's."""
    revision = current_revision(url)
    head = head_revision()
    drift = functions_drift(url) if revision == head else FunctionDrift()
    return SchemaStatus(revision, head, drift)


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
