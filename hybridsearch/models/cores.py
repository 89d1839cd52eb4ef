"""Model calls share the CPU's cores instead of oversubscribing them.

A CPU model call runs on as many threads as its runtime was given (by default every usable
core, so a lone search or ingest gets the whole machine). Two such calls at once would put
twice as many busy threads on the cores; on a 2-core machine that has cost 40x in tail
latency, as threads of parallel requests spin against each other. So each call first holds
as many cores as it has threads, and a call that finds them taken waits its turn.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from hybridsearch.models.backend import usable_cores


class CoreGate:
    """``cores`` cores handed out to model calls; a call waits until its share is free."""

    def __init__(self, cores: int) -> None:
        self._cores = max(1, cores)
        self._free = self._cores
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, threads: int) -> Iterator[None]:
        """Hold ``threads`` cores (at most all of them) for the length of the block."""
        need = min(max(1, threads), self._cores)
        with self._changed:
            self._changed.wait_for(lambda: self._free >= need)
            self._free -= need
        try:
            yield
        finally:
            with self._changed:
                self._free += need
                self._changed.notify_all()


#: The process's cores; every CPU embedder and reranker call goes through it.
CPU_CORES = CoreGate(usable_cores())
