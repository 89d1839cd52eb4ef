"""``hybridsearch collections reindex`` and ``collections calibrate-index``: a collection's
HNSW index, rebuilt with new build parameters or measured for the ef_search it needs.

:func:`register_vector_index_commands` adds them to the ``collections`` subcommands.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from hybridsearch.params import (
    HNSW_CALIBRATION_QUERIES,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    HNSW_TARGET_RECALL,
    add_argument,
)
from hybridsearch.reembed_cli import register_reembed_command


def _client() -> Any:
    from hybridsearch.client import HybridSearch

    return HybridSearch()


def cmd_reindex(args: argparse.Namespace) -> None:
    with _client() as hs:
        collection = hs.rebuild_vector_index(
            args.name, m=args.hnsw_m, ef_construction=args.hnsw_ef_construction
        )
    s = collection.settings
    print(
        f"rebuilt the vector index of {collection.name} (m {s.hnsw_m}, ef_construction"
        f" {s.hnsw_ef_construction}); its searches walk ef_search {s.hnsw_ef_search}"
        " (calibrated)"
    )


def cmd_calibrate_index(args: argparse.Namespace) -> None:
    with _client() as hs:
        steps = hs.calibrate_vector_index(
            args.name, target_recall=args.target_recall, queries=args.queries
        )
    if args.json:
        print(json.dumps([asdict(s) for s in steps], indent=2))
        return
    if not steps:
        print(
            f"collection {args.name}: too few chunks to measure; nothing changed", file=sys.stderr
        )
        return
    print("ef_search\trecall@10\tmean ms\tkept")
    for s in steps:
        print(f"{s.ef_search}\t{s.recall:.3f}\t{s.mean_ms:.2f}\t{'yes' if s.chosen else ''}")
    if not steps[-1].chosen:
        print(
            f"collection {args.name}: no ef_search reached the target; kept the largest,"
            f" {steps[-1].ef_search}. Rebuild the index with a larger hnsw_m or"
            " hnsw_ef_construction (`hybridsearch collections reindex`).",
            file=sys.stderr,
        )


def register_vector_index_commands(collections: Any) -> None:
    """Add ``reindex``, ``calibrate-index`` and ``reembed`` to the ``collections`` subparsers."""
    reindex = collections.add_parser(
        "reindex",
        help="build a collection's HNSW index again, with new build parameters where given,"
        " and calibrate its ef_search; writes wait for the build",
    )
    reindex.add_argument("name")
    add_argument(reindex, HNSW_M, default_text="the collection's")
    add_argument(reindex, HNSW_EF_CONSTRUCTION, default_text="the collection's")
    reindex.set_defaults(func=cmd_reindex)

    calibrate = collections.add_parser(
        "calibrate-index",
        help="measure the HNSW index's recall@10 against exact search and keep the smallest"
        " ef_search that reaches the target (index builds do this by themselves)",
    )
    calibrate.add_argument("name")
    add_argument(calibrate, HNSW_TARGET_RECALL, default=HNSW_TARGET_RECALL.default)
    add_argument(calibrate, HNSW_CALIBRATION_QUERIES, default=HNSW_CALIBRATION_QUERIES.default)
    calibrate.add_argument("--json", action="store_true")
    calibrate.set_defaults(func=cmd_calibrate_index)
    register_reembed_command(collections)
