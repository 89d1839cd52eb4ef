"""The SQL functions a revision installs, and whether a database runs the package's own.

Convention (sql/README.md): ``sql/api/*.sql`` hold the current source of every function,
written ``CREATE OR REPLACE``. A revision that changes functions re-installs those files;
once the revision is released, the files it installs are frozen in
``sql/released/<revision>/`` and the revision reads them from there. Revision 0001
(release 0.1.0) predates the convention and installs ``sql/v001_*.sql``.

Whether a database's functions are the package's is decided by PostgreSQL itself: in a
transaction that is always rolled back, the current sources are installed over the
database's functions, and every definition (``pg_get_functiondef``) is compared before
and after. Nothing is parsed in Python, so the answer holds on any server version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import psycopg
from psycopg import sql

SOURCE_DIR = "api"
RELEASED_DIR = "released"
# Release 0.1.0's files mix tables with functions created by plain CREATE FUNCTION.
V001_FILES = ("v001_schema.sql", "v001_functions.sql")
_V001_FUNCTION = re.compile(r"^CREATE FUNCTION (.*?^\$\$;)$", re.DOTALL | re.MULTILINE)

# Every function of the schema: its signature, full definition and row version. CREATE OR
# REPLACE always writes a new row version, so a changed ctid marks a function a file defines.
_DEFINITIONS_SQL = """
SELECT p.oid::regprocedure::text, pg_catalog.pg_get_functiondef(p.oid), p.ctid::text
FROM pg_catalog.pg_proc AS p
WHERE p.pronamespace = 'hybridsearch'::regnamespace
"""


# Functions of the schema not owned by the schema's owner, and that owner.
_FOREIGN_OWNED_SQL = """
SELECT p.oid::regprocedure::text, pg_catalog.pg_get_userbyid(n.nspowner)
FROM pg_catalog.pg_proc AS p
JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
WHERE n.nspname = 'hybridsearch' AND p.proowner <> n.nspowner
"""


def _sql_dir() -> Traversable:
    return resources.files("hybridsearch.sql")


def source_files(revision: str | None = None) -> list[tuple[str, str]]:
    """(name, text) of the function files ``revision`` installs, in install order.

    A released revision reads its frozen copy in ``sql/released/<revision>/``; the
    unreleased head (or ``None``) reads the current sources in ``sql/api/``. For 0001,
    the function statements of its frozen files, each as CREATE OR REPLACE.
    """
    if revision == "0001":
        return [
            (name, "\n\n".join(f"CREATE OR REPLACE FUNCTION {body}" for body in found))
            for name in V001_FILES
            if (found := _V001_FUNCTION.findall(_sql_dir().joinpath(name).read_text("utf-8")))
        ]
    released = _sql_dir().joinpath(RELEASED_DIR, revision or "")
    folder = released if revision and released.is_dir() else _sql_dir().joinpath(SOURCE_DIR)
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name, f.read_text(encoding="utf-8")) for f in files]


def install(conn: psycopg.Connection, revision: str | None = None) -> None:
    """Install (create or replace) the functions of ``revision`` in the open transaction.

    Function bodies are not checked against each other while the files run (as pg_dump
    restores them), so the files may come in any order; every name they use is
    resolved when a function first runs.
    """
    conn.execute("SET LOCAL check_function_bodies = off")
    for _name, text in source_files(revision):
        conn.execute(text)  # package files, no parameters
    conn.execute("RESET check_function_bodies")
    # A function is owned by whoever created it; one that a revision adds belongs with the
    # schema's others (hybridsearch_owner once sql/roles.sql ran), or a later migration by
    # another member of that role could not replace it.
    for signature, owner in conn.execute(_FOREIGN_OWNED_SQL).fetchall():
        conn.execute(
            sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(
                sql.SQL(signature), sql.Identifier(owner)
            )
        )


def _definitions(conn: psycopg.Connection) -> dict[str, tuple[str, str]]:
    """Signature → (definition, row version) of every function in the schema."""
    rows = conn.execute(_DEFINITIONS_SQL).fetchall()
    return {signature: (definition, ctid) for signature, definition, ctid in rows}


def _install_tracked(
    conn: psycopg.Connection, revision: str | None
) -> tuple[dict[str, str], dict[str, str]]:
    """Install ``revision``'s files; the definitions before, and those the files wrote."""
    before = _definitions(conn)
    install(conn, revision)
    written = {
        signature: definition
        for signature, (definition, ctid) in _definitions(conn).items()
        if signature not in before or before[signature][1] != ctid
    }
    return {signature: definition for signature, (definition, _) in before.items()}, written


def replace_all(conn: psycopg.Connection, revision: str | None = None) -> None:
    """Make the schema's functions exactly ``revision``'s: install its files, drop the rest.

    Run in a transaction; a function that something else (a generated column, a
    trigger) still depends on cannot be dropped, and then the whole change fails.
    """
    before, written = _install_tracked(conn, revision)
    for signature in before.keys() - written.keys():
        conn.execute(f"DROP FUNCTION {signature}")  # a regprocedure from pg_proc


@dataclass(frozen=True)
class FunctionDrift:
    """How the database's functions differ from the package's current sources."""

    changed: tuple[str, ...] = ()  # installed, with another definition
    missing: tuple[str, ...] = ()  # in the sources, not installed
    extra: tuple[str, ...] = ()  # installed, in no source file

    def __bool__(self) -> bool:
        return bool(self.changed or self.missing or self.extra)

    def describe(self) -> str:
        parts = [
            f"{label}: {', '.join(names)}"
            for label, names in (
                ("changed", self.changed),
                ("missing", self.missing),
                ("not in this package", self.extra),
            )
            if names
        ]
        return "; ".join(parts)


def drift(conn: psycopg.Connection) -> FunctionDrift:
    """Compare the installed functions with the current sources (rolled back, never kept).

    Needs the right to replace the functions (their owner, or the migrator role); raises
    ``psycopg.errors.InsufficientPrivilege`` otherwise.
    """
    with conn.transaction(force_rollback=True):
        before, written = _install_tracked(conn, None)
    return FunctionDrift(
        changed=tuple(sorted(s for s in written if s in before and before[s] != written[s])),
        missing=tuple(sorted(written.keys() - before.keys())),
        extra=tuple(sorted(before.keys() - written.keys())),
    )
