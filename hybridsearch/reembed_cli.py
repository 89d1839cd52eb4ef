"""``hybridsearch collections reembed``: switch a collection to another embedding model.

:func:`register_reembed_command` adds it to the ``collections`` subcommands (through
:func:`hybridsearch.vector_index_cli.register_vector_index_commands`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def cmd_reembed(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from hybridsearch.client import HybridSearch

    with HybridSearch() as hs:
        if args.cancel:
            dropped = hs.cancel_reembed(args.name)
            print(
                f"dropped the unfinished re-embed of {args.name}"
                if dropped
                else f"no re-embed of {args.name} was under way"
            )
            return
        if args.model is None:
            raise SystemExit("collections reembed: --model is required (or --cancel)")
        total = next((c.chunks for c in hs.list_collections() if c.name == args.name), None)
        with tqdm(total=total, unit="chunk", desc="re-embedding", file=sys.stderr) as bar:
            report = hs.reembed_collection(args.name, args.model, on_progress=bar.update)
    c = report.collection
    print(
        f"{c.name} now uses {c.embedding_model} ({c.dimensions} dimensions): "
        f"{report.chunks} chunks written ({report.embedded} embedded, the rest from the cache;"
        f" {report.caught_up} caught up and {report.pruned} dropped as they changed meanwhile"
        f"{'; resumed an interrupted re-embed' if report.resumed else ''}) in"
        f" {report.seconds:.1f} s; vector searches walk ef_search {c.settings.hnsw_ef_search}"
        " (calibrated)"
    )


def register_reembed_command(collections: Any) -> None:
    """Add ``reembed`` to the ``collections`` subparsers."""
    reembed = collections.add_parser(
        "reembed",
        help="embed a collection's chunks again with another model (a folder, e.g. from"
        " `hybridsearch train embedder`) and switch to it atomically; searches and writes"
        " go on meanwhile",
    )
    reembed.add_argument("name")
    reembed.add_argument("--model", help="embedding model name or folder to switch to")
    reembed.add_argument(
        "--cancel",
        action="store_true",
        help="drop what an interrupted re-embed left instead (running it again resumes it)",
    )
    reembed.set_defaults(func=cmd_reembed)
