"""`hybridsearch db url` and `db stop`: the SQL user's way into the embedded server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg


def _db(data_dir: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDSEARCH_")}
    env.update(HYBRIDSEARCH_DATA_DIR=str(data_dir), **extra)
    return subprocess.run(
        [sys.executable, "-m", "hybridsearch.cli", "db", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_db_url_connects_to_the_embedded_server_and_db_stop_stops_it(tmp_path: Path) -> None:
    upgraded = _db(tmp_path, "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    url = _db(tmp_path, "url")
    assert url.returncode == 0, url.stderr
    with psycopg.connect(url.stdout.strip()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_catalog.pg_proc"
            " WHERE proname = 'search_hybrid' AND pronamespace = 'hybridsearch'::regnamespace"
        ).fetchone()
    assert row == (1,)

    stopped = _db(tmp_path, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith("stopped the embedded server"), stopped.stderr
    assert not (tmp_path / "pgdata" / "postmaster.pid").exists()
    assert _db(tmp_path, "stop").stdout.startswith("not running")


def test_db_stop_leaves_an_external_server_alone(tmp_path: Path, database_url: str) -> None:
    done = _db(tmp_path, "stop", HYBRIDSEARCH_DATABASE_URL=database_url)
    assert done.returncode == 2
    assert "HYBRIDSEARCH_DATABASE_URL" in done.stderr
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
