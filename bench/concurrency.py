"""Reranked searches from 1 and from 4 concurrent clients: per-request p50/p95.

    python bench/concurrency.py --collection demo_scifact [--reranker DIR] [--per-client 5]

Uses whichever ``hybridsearch`` Python imports first, so an older checkout can be measured
with the same code: ``cd /tmp && PYTHONPATH=/path/to/old/checkout python
/path/to/bench/concurrency.py ...``. The default reranker is the packaged MiniLM with an
untrained head that reads 512 tokens (timing only). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from rerank_length import DATA, timing_model
from suite.concurrency import CLIENTS, run

import hybridsearch
from hybridsearch import HybridSearch, Settings
from hybridsearch.eval.beir import load_queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collection", default="demo_scifact")
    parser.add_argument("--reranker", help="cross-encoder (default: MiniLM, untrained head)")
    parser.add_argument("--per-client", type=int, default=5)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    texts = list(load_queries(args.data / "queries.jsonl").values())
    queries = texts[100 : 100 + CLIENTS * args.per_client]
    settings = Settings.from_env()
    with HybridSearch(settings, reranker=args.reranker or timing_model()) as hs:
        figures = run(hs, args.collection, queries, args.per_client, 50, 5)
    print(
        f"hybridsearch from {Path(hybridsearch.__file__).parent}, {settings.torch_threads} threads"
    )
    for name, row in figures.items():
        ms = row["ms"]
        stages = ", ".join(f"{s} {v:.0f}" for s, v in row["stage_p50_ms"].items())
        print(
            f"{name}: p50 {ms['p50']:.0f} ms, p95 {ms['p95']:.0f} ms, "
            f"{row['requests_per_s']:.2f} requests/s (stage p50 ms: {stages})"
        )


if __name__ == "__main__":
    main()
