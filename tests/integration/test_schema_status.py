"""A database is ready only at this package's revision *and* running its functions.

`hybridsearch db current` and `GET /ready` say what is wrong and name the command that
fixes it; `hybridsearch db upgrade` fixes it, at head too.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from hybridsearch import Settings
from hybridsearch.db import migrate
from tests.integration.test_cli import run_cli
from tests.integration.test_migrations import _with_database
from tests.integration.test_server import ServerThread

# A function of the package, replaced by hand with another body (same signature).
TAMPER_SQL = """
CREATE OR REPLACE FUNCTION hybridsearch.check_top_k(p_top_k integer)
RETURNS void LANGUAGE sql AS $$ SELECT $$
"""
STRAY_SQL = "CREATE FUNCTION hybridsearch.stray() RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$"


@pytest.fixture
def scratch_url(database_url: str) -> Iterator[str]:
    name = f"status_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield _with_database(database_url, name)
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _definitions(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT p.oid::regprocedure::text, pg_catalog.pg_get_functiondef(p.oid)"
            " FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'hybridsearch'::regnamespace"
        ).fetchall()
    return dict(rows)


def _cli_env(url: str) -> dict[str, str]:
    return {**os.environ, "HYBRIDSEARCH_DATABASE_URL": url, "HF_HUB_OFFLINE": "1"}


def test_a_database_behind_head_is_not_ready(scratch_url: str) -> None:
    migrate.upgrade(scratch_url, "0001")
    status = migrate.schema_status(scratch_url)
    assert (status.revision, status.ready) == ("0001", False)
    assert status.problem is not None and "hybridsearch db upgrade" in status.problem

    current = run_cli(_cli_env(scratch_url), "db", "current")
    assert current.returncode == 1
    assert current.stdout.strip() == "0001"
    assert "not ready" in current.stderr and "hybridsearch db upgrade" in current.stderr

    upgraded = run_cli(_cli_env(scratch_url), "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == f"{migrate.head_revision()} (head)"
    assert run_cli(_cli_env(scratch_url), "db", "current").returncode == 0


def test_functions_that_differ_at_head_are_reported_and_reinstalled(
    scratch_url: str, settings: Settings
) -> None:
    migrate.upgrade(scratch_url)
    fresh = _definitions(scratch_url)
    with psycopg.connect(scratch_url, autocommit=True) as conn:
        conn.execute(TAMPER_SQL)
        conn.execute(STRAY_SQL)

    status = migrate.schema_status(scratch_url)
    assert status.revision == migrate.head_revision()
    assert not status.ready
    assert status.drift is not None
    assert status.drift.changed == ("hybridsearch.check_top_k(integer)",)
    assert status.drift.extra == ("hybridsearch.stray()",)
    assert status.drift.missing == ()

    current = run_cli(_cli_env(scratch_url), "db", "current")
    assert current.returncode == 1
    assert "check_top_k" in current.stderr and "hybridsearch db upgrade" in current.stderr

    served = Settings(database_url=scratch_url, data_dir=settings.data_dir, torch_threads=1)
    with ServerThread(served) as base, httpx.Client(base_url=base, timeout=60) as http:
        response = http.get("/ready")
        assert response.status_code == 503
        assert response.json()["error"] == "DatabaseError"
        assert "check_top_k" in response.json()["detail"]
        assert "hybridsearch db upgrade" in response.json()["detail"]

        migrate.upgrade(scratch_url)
        assert http.get("/ready").json() == {
            "status": "ready",
            "revision": migrate.head_revision(),
        }
    assert _definitions(scratch_url) == fresh


def test_a_role_that_may_not_replace_functions_gets_the_revision_check(
    scratch_url: str,
) -> None:
    migrate.upgrade(scratch_url)
    role = f"reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(scratch_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw'")
        admin.execute(f"GRANT USAGE ON SCHEMA hybridsearch TO {role}")
        admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA hybridsearch TO {role}")
    try:
        parts = scratch_url.split("://", 1)[1].split("@", 1)[1]
        status = migrate.schema_status(f"postgresql://{role}:pw@{parts}")
        assert status.revision == migrate.head_revision()
        assert status.drift is None  # not compared: only the owner may replace functions
        assert status.ready  # so readiness rests on the revision alone
    finally:
        with psycopg.connect(scratch_url, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


def test_functions_a_revision_adds_belong_to_the_schema_owner(scratch_url: str) -> None:
    """After sql/roles.sql, an upgrade by a superuser leaves no function owned by it."""
    migrate.upgrade(scratch_url, "0001")
    with psycopg.connect(scratch_url, autocommit=True) as admin:
        admin.execute(migrate.sql_text("roles.sql"))
        # As if the next revision added check_top_k: the superuser running it creates it.
        admin.execute("DROP FUNCTION hybridsearch.check_top_k(integer)")
    migrate.upgrade(scratch_url)
    with psycopg.connect(scratch_url) as conn:
        owners = conn.execute(
            "SELECT DISTINCT pg_catalog.pg_get_userbyid(p.proowner)"
            " FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'hybridsearch'::regnamespace"
        ).fetchall()
    assert owners == [("hybridsearch_owner",)]
