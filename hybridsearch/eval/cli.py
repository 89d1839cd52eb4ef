"""``hybridsearch eval``, ``tune``, ``eval-reranker``, ``eval-sts`` and ``eval-embedder``.

:func:`register_eval_commands` adds them to the main parser. Bad input raises hybridsearch
errors, which the main CLI prints as one line with exit status 2. Bad lines and queries in
the queries and qrels files do not: they are skipped, and each report lists them per
reason (:mod:`hybridsearch.eval.beir`); only a file with nothing usable left is an error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from hybridsearch.errors import InvalidInputError
from hybridsearch.eval import metrics
from hybridsearch.eval.embedder_cli import register_embedder_eval_command
from hybridsearch.eval.pipeline import PipelineConfig
from hybridsearch.eval.tune import Grid
from hybridsearch.loaders import SkipLog
from hybridsearch.params import (
    FUSION,
    KEYWORD_WEIGHT,
    RERANK_DEPTH,
    RRF_K,
    TOP_K,
    TOP_N,
    VECTOR_WEIGHT,
    FusionMethod,
    add_argument,
)

if TYPE_CHECKING:
    from hybridsearch.eval.tune import TuneRow

T = TypeVar("T")

DEFAULT_KS = ",".join(str(k) for k in metrics.DEFAULT_KS)


def _parse_list(text: str, convert: Callable[[str], T], what: str) -> tuple[T, ...]:
    items = []
    for part in text.split(","):
        try:
            items.append(convert(part.strip()))
        except ValueError:
            raise InvalidInputError(
                f"invalid {what} {part.strip()!r} in {text!r}: pass a comma-separated list"
            ) from None
    return tuple(dict.fromkeys(items))


@contextmanager
def _progress(command: str) -> Iterator[Callable[[str, int, int], None]]:
    """tqdm bars on stderr (on a terminal only), one per phase, fed (phase, done, total)."""
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in bars:
            bars[phase] = tqdm(
                total=total, desc=f"{command} {phase}", disable=None, file=sys.stderr
            )
        bars[phase].update(done - bars[phase].n)

    try:
        yield update
    finally:
        for bar in bars.values():
            bar.close()


def _client(args: argparse.Namespace) -> Any:
    from hybridsearch.client import HybridSearch

    return HybridSearch(reranker=args.reranker)


def _settings() -> Any:
    from hybridsearch.config import Settings

    return Settings.from_env()


# -- eval ------------------------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> None:
    from hybridsearch.eval.beir import load_qrels, load_queries
    from hybridsearch.eval.metrics import parse_ks
    from hybridsearch.eval.pipeline import STAGES, evaluate_pipeline, parse_stages
    from hybridsearch.eval.report import (
        fusion_line,
        input_lines,
        markdown_report,
        plot_metrics,
        stage_table,
        summary_line,
        write_json,
    )
    from hybridsearch.eval.runs import write_trec

    ks = parse_ks(args.k)
    skips = SkipLog()
    queries = load_queries(Path(args.queries), skips)
    qrels = load_qrels(Path(args.qrels), skips)
    config = PipelineConfig(
        top_k=args.top_k,
        top_n=args.top_n,
        rerank_depth=args.rerank_depth,
        fusion=args.fusion,
        rrf_k=args.rrf_k,
        vector_weight=args.vector_weight,
        keyword_weight=args.keyword_weight,
    )
    config.check()
    with _client(args) as hs:
        if args.stages:
            stages = parse_stages(args.stages)
        else:
            stages = STAGES if hs.reranker is not None else STAGES[:3]
        with _progress("eval") as progress:
            evaluation = evaluate_pipeline(
                hs,
                args.collection,
                queries,
                qrels,
                stages=stages,
                ks=ks,
                config=config,
                on_progress=lambda done, total: progress("queries", done, total),
                skips=skips,
            )
    if "rerank" not in stages and not args.stages:
        print("note: no reranker configured (--reranker); rerank stage left out", file=sys.stderr)
    print(stage_table(evaluation))
    print(summary_line(evaluation))
    if "hybrid" in evaluation.stages or "rerank" in evaluation.stages:
        print(fusion_line(evaluation))
    for line in input_lines(evaluation.input):
        print(line)
    if args.json:
        write_json(Path(args.json), evaluation.to_dict())
    if args.run_out:
        folder = Path(args.run_out)
        folder.mkdir(parents=True, exist_ok=True)
        for stage, rankings in evaluation.rankings.items():
            write_trec(folder / f"{stage}.trec", rankings, tag=f"hybridsearch-{stage}")
    plot = None
    if args.plot:
        plot = plot_metrics(evaluation.stages, Path(args.plot), title=args.collection)
    if args.report:
        report = Path(args.report)
        report.parent.mkdir(parents=True, exist_ok=True)
        if plot is not None:
            plot = Path(relative_path(plot, report.parent))
        report.write_text(markdown_report(evaluation, plot), encoding="utf-8")


def relative_path(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` where possible, so a report links its plot portably."""
    try:
        return os.path.relpath(path.resolve(), start.resolve())
    except ValueError:  # another drive on Windows
        return str(path.resolve())


# -- tune ------------------------------------------------------------------------------------


def cmd_tune(args: argparse.Namespace) -> None:
    from hybridsearch.eval.beir import load_qrels, load_queries
    from hybridsearch.eval.report import input_lines, tune_table, write_json
    from hybridsearch.eval.tune import save_best, tune

    skips = SkipLog()
    queries = load_queries(Path(args.queries), skips)
    qrels = load_qrels(Path(args.qrels), skips)
    if Path(args.qrels).stem.lower() == "test":
        print("warning: tuning on a test split; tune on train and report test", file=sys.stderr)
    fusions = _parse_list(args.fusion, str, "fusion method")
    with _client(args) as hs:
        depths = args.rerank_depth or ("0,10,20,50" if hs.reranker is not None else "0")
        grid = Grid(
            top_ks=_parse_list(args.top_k, int, "TopK"),
            fusions=cast(tuple[FusionMethod, ...], fusions),
            rrf_ks=_parse_list(args.rrf_k, int, "rrf_k"),
            vector_weights=_parse_list(args.vector_weights, float, "vector weight"),
            rerank_depths=_parse_list(depths, int, "rerank depth"),
        )
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        with _progress("tune") as progress:
            result = tune(
                hs,
                args.collection,
                queries,
                qrels,
                grid,
                objective=args.objective,
                metrics=metrics,
                on_progress=progress,
                skips=skips,
            )
        print(tune_table(result, args.show))
        print(
            f"{result.queries} queries, {result.skipped} skipped (no relevant judgment); "
            f"{len(result.rows)} grid points in {result.seconds:.1f}s, "
            f"{result.reranked_pairs} (query, chunk) pairs reranked"
        )
        for line in input_lines(result.input):
            print(line)
        print(f"best by {result.objective}: hybridsearch eval {_eval_flags(result.best)}")
        if args.json:
            write_json(Path(args.json), result.to_dict())
        if args.save:
            saved = save_best(hs, args.collection, result)
            s = saved.settings
            print(
                f"saved as defaults of {saved.name}: fusion={s.fusion} rrf_k={s.rrf_k} "
                f"vector_weight={s.vector_weight:g} keyword_weight={s.keyword_weight:g}"
            )


def _eval_flags(row: TuneRow) -> str:
    """The ``hybridsearch eval`` options that reproduce a tune row (rerank TopN = depth)."""
    point = row.point
    flags = [f"--top-k {point.top_k}"]
    if row.rerank_depth:
        flags += [f"--top-n {row.rerank_depth}", f"--rerank-depth {row.rerank_depth}"]
    else:
        flags.append("--stages vector,keyword,hybrid")
    flags.append(f"--fusion {point.fusion}")
    if point.rrf_k is not None:
        flags.append(f"--rrf-k {point.rrf_k}")
    flags += [
        f"--vector-weight {point.vector_weight:g}",
        f"--keyword-weight {point.keyword_weight:g}",
    ]
    return " ".join(flags)


# -- models ----------------------------------------------------------------------------------


def cmd_eval_reranker(args: argparse.Namespace) -> None:
    from hybridsearch.eval.beir import load_corpus, load_qrels, load_queries
    from hybridsearch.eval.metrics import parse_ks
    from hybridsearch.eval.models import evaluate_reranker
    from hybridsearch.eval.report import input_lines, metric_rows, text_table, write_json
    from hybridsearch.eval.runs import read_trec
    from hybridsearch.models.configured import configured_reranker

    ks = parse_ks(args.k)
    skips = SkipLog()
    queries = load_queries(Path(args.queries), skips)
    qrels = load_qrels(Path(args.qrels), skips)
    candidates = read_trec(Path(args.candidates))
    corpus = load_corpus(Path(args.corpus))
    settings = _settings()
    reranker = configured_reranker(args.reranker, settings)
    result = evaluate_reranker(
        reranker, queries, corpus, qrels, candidates, depth=args.depth, ks=ks, skips=skips
    )
    print(text_table(*metric_rows({"candidates": result.candidates, "reranked": result.reranked})))
    accuracy = "n/a" if result.pairwise_accuracy is None else f"{result.pairwise_accuracy:.4f}"
    print(
        f"pairwise accuracy {accuracy} over {result.pairs} (relevant, non-relevant) pairs; "
        f"{result.queries} queries, {result.skipped} skipped (no relevant judgment)"
    )
    for line in input_lines(result.input, holder="corpus"):
        print(line)
    if args.json:
        write_json(Path(args.json), result.to_dict())


def cmd_eval_sts(args: argparse.Namespace) -> None:
    from hybridsearch.eval.models import evaluate_sts, load_sts_pairs
    from hybridsearch.eval.report import write_json
    from hybridsearch.models.configured import configured_embedder

    pairs = load_sts_pairs(Path(args.pairs))
    settings = _settings()
    embedder = configured_embedder(args.model or settings.embedding_model, settings)
    result = evaluate_sts(embedder, pairs)
    print(
        f"{embedder.model_id}: Spearman {result.spearman:.4f}, Pearson {result.pearson:.4f} "
        f"over {result.pairs} pairs"
    )
    if args.json:
        write_json(Path(args.json), {"model": embedder.model_id, **result.to_dict()})


# -- parser ----------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _joined(values: tuple[object, ...]) -> str:
    return ",".join(str(value) for value in values)


def _judged_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queries", required=True, help="BEIR queries.jsonl")
    parser.add_argument(
        "--qrels", required=True, help="BEIR qrels TSV (query-id, corpus-id, score)"
    )


def register_eval_commands(sub: Any) -> None:
    """Add ``eval``, ``tune``, ``eval-reranker``, ``eval-sts`` and ``eval-embedder`` to the
    CLI's subparsers."""
    ev = sub.add_parser("eval", help="score every search stage on judged queries")
    ev.add_argument("--collection", required=True)
    _judged_inputs(ev)
    ev.add_argument("--k", default=DEFAULT_KS, help=f"metric cutoffs (default {DEFAULT_KS})")
    ev.add_argument(
        "--stages",
        help="comma-separated from vector,keyword,hybrid,rerank "
        "(default: all; rerank only with a reranker)",
    )
    add_argument(ev, TOP_K, default=PipelineConfig.top_k)
    add_argument(ev, TOP_N, default=PipelineConfig.top_n)
    add_argument(ev, RERANK_DEPTH, default_text="all TopK, as search does")
    for param in (FUSION, RRF_K, VECTOR_WEIGHT, KEYWORD_WEIGHT):
        add_argument(ev, param, default_text="the collection's")
    ev.add_argument("--reranker", help="cross-encoder name or path (default: settings)")
    ev.add_argument("--json", metavar="OUT.json", help="write the metrics as JSON")
    ev.add_argument("--run-out", metavar="DIR", help="write <stage>.trec run files")
    ev.add_argument("--plot", metavar="OUT.png", help="plot each metric against k")
    ev.add_argument("--report", metavar="OUT.md", help="write a markdown report")
    ev.set_defaults(func=cmd_eval)

    tn = sub.add_parser(
        "tune", help="grid search of TopK, fusion and rerank depth on a train split"
    )
    tn.add_argument("--collection", required=True)
    _judged_inputs(tn)
    grid = Grid()
    tn.add_argument(
        "--top-k",
        default=_joined(grid.top_ks),
        help=f"TopK values, each {TOP_K.expected} (default {_joined(grid.top_ks)})",
    )
    tn.add_argument(
        "--fusion",
        default=_joined(grid.fusions),
        help=f"fusion methods, each {FUSION.expected} (default {_joined(grid.fusions)})",
    )
    tn.add_argument(
        "--rrf-k",
        default=_joined(grid.rrf_ks),
        help=f"RRF k values, each {RRF_K.expected} (default {_joined(grid.rrf_ks)})",
    )
    tn.add_argument(
        "--vector-weights",
        default=_joined(grid.vector_weights),
        help="vector weights w in [0, 1]; the keyword weight is 1 - w "
        f"(default {_joined(grid.vector_weights)})",
    )
    tn.add_argument(
        "--rerank-depth",
        help="fused candidates reranked, 0 = none (default 0,10,20,50 with a reranker, else 0)",
    )
    tn.add_argument("--objective", default="ndcg@10", help="metric to rank by (default ndcg@10)")
    tn.add_argument(
        "--metrics",
        default="ndcg@10,recall@100,mrr@10",
        help="metrics to show (default ndcg@10,recall@100,mrr@10)",
    )
    tn.add_argument("--reranker", help="cross-encoder name or path (default: settings)")
    tn.add_argument("--show", type=_positive_int, default=20, help="rows to print (default 20)")
    tn.add_argument("--json", metavar="OUT.json", help="write every grid point as JSON")
    tn.add_argument(
        "--save", action="store_true", help="store the best fusion settings as collection defaults"
    )
    tn.set_defaults(func=cmd_tune)

    rr = sub.add_parser("eval-reranker", help="rerank a fixed candidate run and score it")
    rr.add_argument("--reranker", required=True, help="cross-encoder name or path")
    rr.add_argument("--corpus", required=True, help="BEIR corpus.jsonl the candidates come from")
    _judged_inputs(rr)
    rr.add_argument("--candidates", required=True, help="TREC run file, e.g. from eval --run-out")
    rr.add_argument("--depth", type=_positive_int, default=100, help="candidates per query")
    rr.add_argument("--k", default=DEFAULT_KS, help=f"metric cutoffs (default {DEFAULT_KS})")
    rr.add_argument("--json", metavar="OUT.json")
    rr.set_defaults(func=cmd_eval_reranker)

    sts = sub.add_parser("eval-sts", help="STS Spearman correlation of an embedding model")
    sts.add_argument("--model", help="embedding model name or path (default: settings)")
    sts.add_argument(
        "--pairs", required=True, help="TSV: sentence1, sentence2, human score (header optional)"
    )
    sts.add_argument("--json", metavar="OUT.json")
    sts.set_defaults(func=cmd_eval_sts)

    register_embedder_eval_command(sub)
