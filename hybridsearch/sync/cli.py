"""``hybridsearch sync add | remove | run | status | retry``: synced application tables."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from hybridsearch.sync.worker_async import BATCH, POLL_INTERVAL_S, RoundReport


def _client() -> Any:
    from hybridsearch.client import HybridSearch

    return HybridSearch()


def _names(text: str) -> list[str]:
    """Comma-separated column names."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of columns")
    return names


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def cmd_sync(args: argparse.Namespace) -> None:
    with _client() as hs:
        if args.action == "add":
            queued = hs.sync_table(
                args.collection,
                args.table,
                id_column=args.id_column,
                text_columns=args.text_columns,
                metadata_columns=args.metadata_columns or [],
                tenant_column=args.tenant_column,
            )
            print(
                f"syncing {args.table} into {args.collection!r}; {queued} existing rows "
                "queued. Run `hybridsearch sync run` to write them."
            )
        elif args.action == "remove":
            if not hs.unsync_table(args.collection, args.table):
                print(f"{args.table} was not synced into {args.collection!r}")
                return
            print(f"stopped syncing {args.table} into {args.collection!r}")
        elif args.action == "retry":
            print(f"{hs.sync_retry(args.collection, args.table)} failed rows queued again")
        elif args.action == "status":
            _print_status(hs.sync_status(), as_json=args.json)
        else:
            _run(hs, args)


def _print_status(tables: list[Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps([t.to_json() for t in tables], ensure_ascii=False, indent=2))
        return
    if not tables:
        print("no synced tables; add one with `hybridsearch sync add`")
    for table in tables:
        print("\n".join(table.describe()))


def _run(hs: Any, args: argparse.Namespace) -> None:
    """The worker, until the queue is drained (``--once``) or SIGTERM / SIGINT: a round
    in progress is finished and committed first."""
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    def show(done: RoundReport) -> None:
        if done.claimed > done.skipped or done.backfilled:
            queued = f", {done.backfilled} rows queued by a backfill" if done.backfilled else ""
            print(f"{done.describe()}{queued}", flush=True)

    total = hs.sync_run(
        once=args.once,
        batch_size=args.batch,
        poll_interval_s=args.poll_interval,
        stop=stop,
        on_round=None if args.quiet else show,
    )
    for warning in total.warnings:
        print(f"hybridsearch: warning: {warning}", file=sys.stderr)
    print(f"sync: {total.describe()}" + (" (stopped)" if stop.is_set() else ""))


def register_sync_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hybridsearch sync ...`` to the CLI's subcommands."""
    sync = sub.add_parser(
        "sync", help="keep collections in step with application tables (triggers + worker)"
    )
    actions = sync.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="sync a table into a collection and queue its rows")
    add.add_argument("--collection", required=True)
    add.add_argument("--table", required=True, help="SCHEMA.TABLE")
    add.add_argument("--id-column", required=True, help="a unique column: the document id")
    add.add_argument("--text-columns", required=True, type=_names, help="A,B: the document's text")
    add.add_argument("--metadata-columns", type=_names, help="X,Y: the document's metadata")
    add.add_argument("--tenant-column", help="the column naming each row's tenant")
    remove = actions.add_parser("remove", help="stop syncing (the documents stay)")
    remove.add_argument("--collection", required=True)
    remove.add_argument("--table", required=True, help="SCHEMA.TABLE")
    run = actions.add_parser("run", help="the worker: write queued rows into their collections")
    run.add_argument("--once", action="store_true", help="drain the queue, then exit")
    run.add_argument(
        "--batch", type=_positive_int, default=BATCH, help=f"rows per transaction ({BATCH})"
    )
    run.add_argument(
        "--poll-interval",
        type=_positive_float,
        default=POLL_INTERVAL_S,
        help=f"seconds between looks at the queue without a notification ({POLL_INTERVAL_S:g})",
    )
    run.add_argument("--quiet", action="store_true", help="print only the summary")
    status = actions.add_parser("status", help="queue, lag and failed rows per synced table")
    status.add_argument("--json", action="store_true")
    retry = actions.add_parser("retry", help="queue the failed rows again")
    retry.add_argument("--collection")
    retry.add_argument("--table", help="SCHEMA.TABLE")
    sync.set_defaults(func=cmd_sync)
