"""Sync workers SIGKILLed in the middle of a batch, 5 times, while the application
writes: nothing is lost and nothing duplicated. ``bench/sync.py --kills 20`` runs the
long mode.

Each worker is a process of its own (``tests.reliability.sync_worker``) whose embedder
takes 20 ms a call, as a model takes time, so its round's transaction is open when the
kill lands (the test checks that it is). Afterwards one worker drains the queue and the
collection must equal the table: every row with text a document of its id, tenant,
content hash and metadata, nothing else, every document whole.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import pytest

from hybridsearch.db import migrate
from tests.reliability.conftest import record_figure
from tests.reliability.support import connect, create_database, drop_database
from tests.reliability.sync_load import create_app_table, declare, kill_cycles

KILLS = 5
ROWS = 1_500


@pytest.fixture
def url(database_url: str) -> Iterator[str]:
    name = f"rel_sync_kill_{uuid.uuid4().hex[:8]}"
    url = create_database(database_url, name)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        drop_database(database_url, name)


@pytest.mark.slow
def test_workers_killed_mid_batch_lose_nothing(url: str) -> None:
    with connect(url) as conn:
        create_app_table(conn, ROWS, seed=random.randrange(1000))
        declare(conn)
    figures = kill_cycles(url, KILLS, seed=3)
    assert figures["in_transaction"] == KILLS  # every kill landed inside a round
    assert figures["queued_after_kills"] > 0  # the kills left work to come back
    assert figures["differences"] == []
    assert figures["consistency"] == []
    record_figure(
        f"sync: {KILLS} workers SIGKILLed mid-batch while the application wrote; "
        f"{figures['queued_after_kills']:,} entries came back, one worker drained them in "
        f"{figures['drain_s']:.1f} s ({figures['drain']}); nothing lost or duplicated"
    )
