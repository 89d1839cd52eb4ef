"""``hybridsearch eval-embedder``: an embedding model on clustering, classification, STS or
a domain check, with a table, ``--json``, ``--plot`` and ``--report`` like ``eval``'s.

Nothing here touches the database: the model is evaluated on the files given.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hybridsearch.errors import InvalidInputError
from hybridsearch.eval.classification import MAX_FOLDS
from hybridsearch.eval.domain import DEFAULT_METRICS
from hybridsearch.eval.embedder_tasks import TASKS

DATA_HELP = (
    "clustering, classification: JSONL with text and label per line; sts: TSV sentence1, "
    "sentence2, score; domain: the domain's BEIR folder (corpus.jsonl, queries.jsonl, "
    "qrels/<split>.tsv)"
)


def cmd_eval_embedder(args: argparse.Namespace) -> None:
    from hybridsearch.config import Settings
    from hybridsearch.eval.cli import relative_path
    from hybridsearch.eval.embedder_eval import evaluate_embedder
    from hybridsearch.eval.embedder_report import markdown_report, plot_bars, result_lines
    from hybridsearch.eval.report import write_json
    from hybridsearch.models.configured import configured_embedder

    metrics = None
    if args.metrics is not None:
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        if not metrics:
            raise InvalidInputError("--metrics is empty; pass e.g. ndcg@10,recall@100")
    settings = Settings.from_env()
    embedder = configured_embedder(args.model or settings.embedding_model, settings)
    result = evaluate_embedder(
        args.task,
        args.data,
        model=embedder,
        general=args.general,
        split=args.split,
        general_split=args.general_split,
        metrics=metrics,
        folds=args.folds,
        seed=args.seed,
    )
    for line in result_lines(result, embedder.model_id):
        print(line)
    if args.json:
        write_json(Path(args.json), {"model": embedder.model_id, **result.to_dict()})
    plot = None
    if args.plot:
        title = f"{args.task}: {embedder.model_id}"
        plot = plot_bars(result.series(), Path(args.plot), title=title)
    if args.report:
        report = Path(args.report)
        report.parent.mkdir(parents=True, exist_ok=True)
        if plot is not None:
            plot = Path(relative_path(plot, report.parent))
        report.write_text(markdown_report(result, embedder.model_id, plot), encoding="utf-8")


def register_embedder_eval_command(sub: Any) -> None:
    """Add ``eval-embedder`` to the CLI's subparsers."""
    ev = sub.add_parser(
        "eval-embedder",
        help="an embedding model on clustering, classification, STS or a domain check",
    )
    ev.add_argument("--task", required=True, choices=TASKS)
    ev.add_argument("--data", required=True, help=DATA_HELP)
    ev.add_argument("--model", help="embedding model name or path (default: settings)")
    ev.add_argument(
        "--general", metavar="DIR", help="domain: the general BEIR folder to compare with"
    )
    ev.add_argument("--split", default="test", help="domain: qrels split (default test)")
    ev.add_argument(
        "--general-split", help="domain: the general set's qrels split (default: --split)"
    )
    ev.add_argument(
        "--metrics",
        help=f"domain: retrieval metrics (default {','.join(DEFAULT_METRICS)})",
    )
    ev.add_argument(
        "--folds",
        type=int,
        help=f"classification: cross-validation folds (default: {MAX_FOLDS}, or the smallest "
        "label's size when smaller)",
    )
    ev.add_argument(
        "--seed",
        type=int,
        default=0,
        help="k-means starts, fold assignment and the shuffled-label control (default 0)",
    )
    ev.add_argument("--json", metavar="OUT.json", help="write the figures as JSON")
    ev.add_argument("--plot", metavar="OUT.png", help="plot the figures as bars")
    ev.add_argument("--report", metavar="OUT.md", help="write a markdown report")
    ev.set_defaults(func=cmd_eval_embedder)
