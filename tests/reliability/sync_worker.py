"""A sync worker process: ``python -m tests.reliability.sync_worker URL [--once] ...``.

Runs :func:`hybridsearch.sync.worker.rounds` with :class:`SlowHashEmbedder` vectors, so
the reliability tests and ``bench/sync.py`` can SIGKILL a real worker process in the
middle of a batch. Exits 0 on SIGTERM after finishing the round in progress.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from hybridsearch.sync import worker
from tests.reliability.support import HashEmbedder


class SlowHashEmbedder(HashEmbedder):
    """HashEmbedder that takes ``delay_s`` per call, as a model takes time to embed: the
    worker's transaction then stays open across the embedding, as it does in use."""

    def __init__(self, dimensions: int, delay_s: float) -> None:
        super().__init__(dimensions)
        self.delay_s = delay_s

    def embed_documents(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        time.sleep(self.delay_s)
        return super().embed_documents(texts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--once", action="store_true")
    parser.add_argument("--batch", type=int, default=worker.BATCH)
    parser.add_argument("--embed-delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    total = worker.RoundReport()
    with worker.connect(args.url) as conn, worker.connect(args.url, listen=False) as cache:
        for done in worker.rounds(
            conn,
            lambda c: SlowHashEmbedder(c.dimensions, args.embed_delay),
            once=args.once,
            batch_size=args.batch,
            poll_interval_s=0.2,
            stop=stop,
            cache=cache,
        ):
            total.add(done)
    print(f"{total.describe()}{' (stopped)' if stop.is_set() else ''}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
