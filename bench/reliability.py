"""Reliability soak and crash runs, longer than the CI tests in tests/reliability.

    python bench/reliability.py                 # 60 s soak + 5 crash cycles
    python bench/reliability.py --long          # 10 min soak + 20 crash cycles
        [--soak-seconds N] [--crash-cycles N] [--ingest-clients 4] [--query-clients 16]
        [--skip-soak] [--skip-crash] [--seed 0] [--json OUT]

The soak runs against HYBRIDSEARCH_DATABASE_URL or the embedded server (its schema is
upgraded first) in a collection of its own, dropped afterwards. The crash cycles always
use a fresh embedded server in a temporary folder, removed afterwards.
HYBRIDSEARCH_SOAK_SECONDS sets the soak length when --soak-seconds is not given.

Prints figures (p50/p99 query latency, throughput, restart times, recall). Timings never
fail; the exit status is 1 only when an invariant broke: an unexpected error, a lost or
half-visible document, a corrupt index or recall below its floor.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.reliability

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hybridsearch.config import Settings
from hybridsearch.db import migrate
from hybridsearch.db.connection import database_url
from hybridsearch.db.embedded import stop_embedded_server
from tests.reliability.crash import run_crash_cycles
from tests.reliability.soak import MODES, run_soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--long", action="store_true", help="10 min soak, 20 crash cycles")
    parser.add_argument("--soak-seconds", type=float, default=None)
    parser.add_argument("--crash-cycles", type=int, default=None)
    parser.add_argument("--ingest-clients", type=int, default=4)
    parser.add_argument("--query-clients", type=int, default=16)
    parser.add_argument("--skip-soak", action="store_true")
    parser.add_argument("--skip-crash", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    soak_seconds = args.soak_seconds or float(
        os.environ.get("HYBRIDSEARCH_SOAK_SECONDS", "600" if args.long else "60")
    )
    crash_cycles = args.crash_cycles or (20 if args.long else 5)

    figures: dict[str, Any] = {}
    broken: list[str] = []
    if not args.skip_soak:
        url = database_url(Settings.from_env())
        migrate.upgrade(url)
        print(
            f"soak: {soak_seconds:.0f} s, {args.ingest_clients} ingest + "
            f"{args.query_clients} query clients ...",
            flush=True,
        )
        soak = run_soak(
            url,
            seconds=soak_seconds,
            ingest_clients=args.ingest_clients,
            query_clients=args.query_clients,
            seed=args.seed,
        )
        print(soak.summary())
        figures["soak"] = {
            "seconds": soak.seconds,
            "queries": soak.queries,
            "queries_per_s": soak.queries / soak.seconds,
            "p50_ms": soak.latency(50),
            "p99_ms": soak.latency(99),
            "by_mode": {
                m: {"p50_ms": soak.latency(50, m), "p99_ms": soak.latency(99, m)} for m in MODES
            },
            "batches": soak.batches,
            "added": soak.added,
            "updated": soak.updated,
            "deleted": soak.deleted,
            "audits": soak.audits,
            "errors": soak.errors,
            "lost": soak.lost,
            "half_visible": soak.half_visible,
            "final_problems": soak.final_problems,
        }
        broken += soak.errors + soak.lost + soak.half_visible + soak.final_problems

    if not args.skip_crash:
        data_dir = Path(tempfile.mkdtemp(prefix="hybridsearch-crash-"))
        print(f"crash: {crash_cycles} SIGKILL cycles in {data_dir} ...", flush=True)
        started = time.perf_counter()
        try:
            crash = run_crash_cycles(data_dir, crash_cycles, seed=args.seed)
        finally:
            try:
                stop_embedded_server(data_dir)
            except Exception as exc:  # a failed stop must not hide the run's outcome
                print(f"could not stop the crash server: {exc}", file=sys.stderr)
            shutil.rmtree(data_dir, ignore_errors=True)
        print(crash.summary())
        print(f"crash: {time.perf_counter() - started:.0f} s in all")
        figures["crash"] = {"cycles": [asdict(c) for c in crash.cycles]}
        broken += crash.problems

    for problem in broken[:50]:
        print(f"BROKEN: {problem}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
