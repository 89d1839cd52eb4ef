"""``hybridsearch train reranker`` and ``train embedder``: fine-tune a model on a collection
and judgments.

:func:`register_train_commands` adds the commands to the main parser; the work is
:func:`hybridsearch.train.reranker.train_reranker` and
:func:`hybridsearch.train.embedder.train_embedder`. The closing tables compare, on the
held-out validation queries, the fused list with the reranked list, and the base
embedding model with the trained one.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The recipes only: the training modules import torch, which a one-shot search must not.
from hybridsearch.train.recipes import SELECTION_METRIC, EmbedderRecipe, RerankerRecipe

if TYPE_CHECKING:
    from hybridsearch.train.embedder import EmbedderTraining
    from hybridsearch.train.reranker import RerankerTraining

#: Recipe fields with a CLI flag of their own, and what each means.
_RECIPE_FLAGS: dict[str, str] = {
    "steps": "optimizer steps at most",
    "batch_size": "queries (one positive and their negatives each) per step",
    "negatives": "hard negatives per positive, from the fused list's head",
    "negative_depth": "how deep in the fused list negatives are drawn",
    "max_length": "tokens per (query, passage) pair",
    "learning_rate": "the encoder's learning rate (the new head's is 10x)",
    "validation_queries": "judged queries held out for selection and calibration",
    "validate_every": "steps between validations (0: only at the end)",
    "patience": "validations without improvement before stopping (0: never)",
    "rerank_depth": "fused candidates reranked in validation, as in search --rerank-depth",
    "seed": "seed of the split, the sampling and the initialisation",
}
_EMBEDDER_FLAGS: dict[str, str] = {
    "steps": "optimizer steps at most",
    "batch_size": "examples per step (the batch's other passages are negatives too)",
    "negatives": "hard negatives per example, from the fused list's head",
    "negative_depth": "how deep in the fused list negatives are drawn",
    "max_length": "tokens per text",
    "learning_rate": "learning rate",
    "validation_queries": "judged queries held out for selection",
    "validate_every": "steps between validations",
    "patience": "validations without improvement before stopping (0: never)",
    "seed": "seed of the split, the sampling and the initialisation",
}


def _train(args: argparse.Namespace, what: str, recipe: Any, train: Any) -> Any:
    """Run ``train(hs, collection, queries, qrels, out, recipe, ...)`` for the command
    ``train <what>``, with a progress bar over its steps; what it returns."""
    from tqdm import tqdm

    from hybridsearch.client import HybridSearch
    from hybridsearch.eval.beir import describe, load_qrels, load_queries
    from hybridsearch.eval.cli import _progress
    from hybridsearch.loaders import SkipLog

    recipe.check()
    skips = SkipLog()
    queries = load_queries(Path(args.queries), skips)
    qrels = load_qrels(Path(args.qrels), skips)
    # On a terminal only (disable=None): a log or a pipe gets the closing table.
    steps = tqdm(total=recipe.steps, desc=f"train {what} steps", disable=None, file=sys.stderr)
    with HybridSearch() as hs, _progress(f"train {what}") as progress, steps as bar:

        def on_step(done: int, loss: float) -> None:
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            bar.update(done - bar.n)

        result = train(
            hs,
            args.collection,
            queries,
            qrels,
            Path(args.out),
            recipe,
            on_progress=progress,
            on_step=on_step,
            skips=skips,
        )
    if skips.skipped:
        print(f"hybridsearch: skipped {describe(skips.summary())}", file=sys.stderr)
    return result


def cmd_train_reranker(args: argparse.Namespace) -> None:
    from hybridsearch.train.reranker import train_reranker

    recipe = RerankerRecipe(
        base_model=args.base, **{name: getattr(args, name) for name in _RECIPE_FLAGS}
    )
    print(closing_report(_train(args, "reranker", recipe, train_reranker)))


def closing_report(result: RerankerTraining) -> str:
    """The validation table (fused against reranked) and what was saved."""
    from hybridsearch.eval.report import metric_rows, text_table

    columns = {"fused": result.validation["hybrid"], "reranked": result.validation["rerank"]}
    gain = columns["reranked"][SELECTION_METRIC] - columns["fused"][SELECTION_METRIC]
    log = result.log
    stop = "stopped early" if log.stopped_early else "ran every step"
    fit = result.calibration
    return "\n".join(
        [
            f"validation: {result.validation_queries} held-out queries of the given qrels, "
            f"reranked to depth {result.recipe.rerank_depth} of TopK {result.recipe.top_k}",
            text_table(*metric_rows(columns)),
            f"{SELECTION_METRIC}: reranked - fused = {gain:+.4f}",
            f"trained on {result.train_queries} queries ({result.groups} positives), "
            f"{log.steps} steps ({stop}); kept step {log.best_step}",
            "rerank scores are calibrated probabilities of relevance: sigmoid("
            f"{fit.slope:.3f} x logit {fit.fused_weight:+.3f} x fused {fit.intercept:+.3f})",
            f"took {', '.join(f'{k} {v:.0f}s' for k, v in result.timings_s.items())}",
            f"saved to {result.path}",
        ]
    )


def cmd_train_embedder(args: argparse.Namespace) -> None:
    from hybridsearch.train.embedder import train_embedder

    recipe = EmbedderRecipe(
        base_model=args.base, **{name: getattr(args, name) for name in _EMBEDDER_FLAGS}
    )
    print(embedder_report(_train(args, "embedder", recipe, train_embedder), args.collection))


def embedder_report(result: EmbedderTraining, collection: str) -> str:
    """The validation table (base model against trained) and what to run next."""
    from hybridsearch.eval.report import metric_rows, text_table

    base, trained = result.validation["base"], result.validation["trained"]
    log = result.log
    return "\n".join(
        [
            f"validation: {result.validation_queries} held-out queries of the given qrels,"
            f" each ranking the pool of their fused candidates ({result.pool} chunks) by"
            " cosine",
            text_table(
                *metric_rows(
                    {"base model": {SELECTION_METRIC: base}, "trained": {SELECTION_METRIC: trained}}
                )
            ),
            f"{SELECTION_METRIC}: trained - base = {trained - base:+.4f}",
            f"trained on {result.train_queries} queries ({result.examples} examples) from"
            f" {result.base_model}, {log.steps} steps; kept step {log.best_step}",
            f"took {', '.join(f'{k} {v:.0f}s' for k, v in result.timings_s.items())}",
            f"saved to {result.path}; switch the collection to it with"
            f" `hybridsearch collections reembed {collection} --model {result.path}`,"
            " then measure the fused stage with `hybridsearch eval`",
        ]
    )


def _add_recipe_flags(parser: Any, defaults: Any, flags: dict[str, str]) -> None:
    """``--name`` for each recipe field in ``flags``, typed and defaulted by the recipe."""
    types = {f.name: f.type for f in fields(defaults)}
    for name, meaning in flags.items():
        kind = float if types[name] in (float, "float") else int
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            default=getattr(defaults, name),
            help=f"{meaning} (default %(default)s)",
        )


def register_train_commands(sub: Any) -> None:
    """Add ``train reranker`` and ``train embedder`` to the CLI's subparsers."""
    train = sub.add_parser("train", help="fine-tune models on a collection and judgments")
    train_sub = train.add_subparsers(dest="model", required=True)
    reranker = train_sub.add_parser(
        "reranker",
        help="cross-encoder on the collection's own fused candidates (hard negatives)",
        description="Fine-tune a cross-encoder reranker listwise on hard negatives mined "
        "from the collection's fused candidates; a validation split carved from the qrels "
        "selects the checkpoint, stops training early and calibrates the scores. Use a "
        "train split, never the test split.",
    )
    reranker.add_argument("--collection", required=True)
    reranker.add_argument("--queries", required=True, help="BEIR queries.jsonl")
    reranker.add_argument("--qrels", required=True, help="BEIR qrels TSV: a TRAIN split")
    reranker.add_argument("--out", required=True, help="folder for the model")
    defaults = RerankerRecipe()
    reranker.add_argument(
        "--base", default=defaults.base_model, help="model to start from (default %(default)s)"
    )
    _add_recipe_flags(reranker, defaults, _RECIPE_FLAGS)
    reranker.set_defaults(func=cmd_train_reranker)

    embedder = train_sub.add_parser(
        "embedder",
        help="bi-encoder on the collection's own fused candidates (in-batch and hard negatives)",
        description="Fine-tune an embedding model (by default the collection's own) on hard "
        "negatives mined from the collection's fused candidates and in-batch negatives; a "
        "validation split carved from the qrels selects the weights and stops training "
        "early. Use a train split, never the test split. Switch the collection to the "
        "result with `hybridsearch collections reembed`.",
    )
    embedder.add_argument("--collection", required=True)
    embedder.add_argument("--queries", required=True, help="BEIR queries.jsonl")
    embedder.add_argument("--qrels", required=True, help="BEIR qrels TSV: a TRAIN split")
    embedder.add_argument("--out", required=True, help="folder for the model")
    embedder.add_argument("--base", help="model to start from (default: the collection's)")
    _add_recipe_flags(embedder, EmbedderRecipe(), _EMBEDDER_FLAGS)
    embedder.set_defaults(func=cmd_train_embedder)
