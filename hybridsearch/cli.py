"""The ``hybridsearch`` command line.

Every hybridsearch error becomes one line on stderr and exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from itertools import chain, islice
from typing import TYPE_CHECKING, Any

from hybridsearch.collections import CollectionSettings
from hybridsearch.errors import HybridSearchError
from hybridsearch.eval.cli import register_eval_commands
from hybridsearch.keys_cli import register_keys_commands
from hybridsearch.models.picker import SAMPLE_DOCUMENTS
from hybridsearch.params import (
    FUSION,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    KEYWORD_WEIGHT,
    MODE,
    ONE_PER_DOCUMENT,
    RERANK_DEPTH,
    RRF_K,
    TOP_K,
    TOP_N,
    VECTOR_WEIGHT,
    add_argument,
    check_rerank_depth,
)
from hybridsearch.server_cli import register_serve_command
from hybridsearch.sync.cli import register_sync_commands
from hybridsearch.train_cli import register_train_commands
from hybridsearch.vector_index_cli import register_vector_index_commands

if TYPE_CHECKING:
    from hybridsearch.config import Settings

EXIT_ERROR = 2
EXIT_PARTIAL = 1  # `ingest`: some files or lines were skipped, the rest is stored
EXIT_NOT_READY = 1  # `db current`: the database is reachable but not at this package's schema


def _client(args: argparse.Namespace) -> Any:
    from hybridsearch.client import HybridSearch

    return HybridSearch(reranker=getattr(args, "reranker", None))


def _print_json(value: object) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


# -- db ------------------------------------------------------------------------------------


def cmd_db(args: argparse.Namespace) -> None:
    from hybridsearch.config import Settings
    from hybridsearch.db import migrate
    from hybridsearch.db.connection import database_url

    settings = Settings.from_env()
    if args.action == "stop":
        _stop_embedded(settings)
        return
    url = database_url(settings)
    if args.action == "url":
        print(url)  # e.g. psql "$(hybridsearch db url)"
        return
    if args.action == "upgrade":
        migrate.upgrade(url, args.revision or "head")
    elif args.action == "downgrade":
        migrate.downgrade(url, args.revision or "-1")
    status = migrate.schema_status(url)
    head = " (head)" if status.revision == status.head else ""
    print(f"{status.revision or 'base (hybridsearch not installed)'}{head}")
    if args.action == "current" and not status.ready:
        print(f"hybridsearch: not ready: {status.problem}", file=sys.stderr)
        raise SystemExit(EXIT_NOT_READY)


def _stop_embedded(settings: Settings) -> None:
    from hybridsearch.db.embedded import stop_embedded_server
    from hybridsearch.errors import ConfigurationError

    if settings.database_url:
        raise ConfigurationError(
            "`db stop` stops the embedded server; HYBRIDSEARCH_DATABASE_URL names an external "
            "one, which this command leaves alone"
        )
    stopped = stop_embedded_server(settings.data_dir)
    where = settings.data_dir / "pgdata"
    print(f"stopped the embedded server in {where}" if stopped else f"not running ({where})")


# -- collections ---------------------------------------------------------------------------


def cmd_collections(args: argparse.Namespace) -> None:
    with _client(args) as hs:
        if args.action == "create":
            settings = CollectionSettings(
                chunk_max_tokens=args.chunk_tokens,
                chunk_overlap_tokens=args.overlap_tokens,
                query_prompt=args.query_prompt,
                document_prompt=args.document_prompt,
                hnsw_m=args.hnsw_m,
                hnsw_ef_construction=args.hnsw_ef_construction,
            )
            c = hs.create_collection(
                args.name,
                model=args.model,
                distance=args.distance,
                analyzer=args.analyzer,
                settings=settings,
                bm25_k1=args.bm25_k1,
                bm25_b=args.bm25_b,
            )
            print(f"created collection {c.name} ({c.embedding_model}, {c.dimensions} dimensions)")
            _print_model_choice(c)
        elif args.action == "list":
            stats = hs.list_collections()
            if args.json:
                _print_json([vars(s) for s in stats])
                return
            for s in stats:
                print(
                    f"{s.name}\t{s.model}\t{s.dimensions}d\t"
                    f"{s.documents} documents\t{s.chunks} chunks"
                )
        elif args.action == "drop":
            if not hs.drop_collection(args.name):
                raise _not_found(args.name)
            print(f"dropped collection {args.name}")
        elif args.action == "calibrate":
            _print_calibration(args.name, hs.calibrate(args.name), hs.get_collection(args.name))


def _print_calibration(name: str, result: Any, collection: Any) -> None:
    """What a calibration measured, and whether the collection's own weights override it."""
    from hybridsearch.calibration import MIN_SAMPLE, describe

    if result is None:
        print(
            f"collection {name}: too few chunks to calibrate (fewer than {MIN_SAMPLE} with"
            " two usable halves); the fusion weights stay as they are",
            file=sys.stderr,
        )
        return
    print(f"collection {name}: {describe(result)}", file=sys.stderr)
    if collection.settings.sets_weights:
        d = collection.fusion_defaults
        print(
            f"collection {name}: its settings set the weights (vector {d.vector_weight:g},"
            f" keyword {d.keyword_weight:g}), which win over the calibration; set them to"
            " null to use it",
            file=sys.stderr,
        )


def _print_model_choice(collection: Any, prefix: str = "hybridsearch: model") -> None:
    """Why a new collection has its model, and a licence note where one is due (stderr)."""
    from hybridsearch.models.picker import licence_note

    print(f"{prefix} {collection.settings.model_choice}", file=sys.stderr)
    note = licence_note(collection.embedding_model)
    if note is not None:
        print(f"hybridsearch: note: {note}", file=sys.stderr)


def _not_found(name: str) -> HybridSearchError:
    from hybridsearch.errors import CollectionNotFoundError

    return CollectionNotFoundError(f"collection {name!r} does not exist")


# -- documents -----------------------------------------------------------------------------


def cmd_ingest(args: argparse.Namespace) -> None:
    """Load files into a collection (created with defaults when missing).

    What cannot be read is skipped, reported line by line on stderr and counted, and the
    command then exits with status 1; ``--strict`` checks every file first and loads
    nothing if anything is wrong. A collection this command created is dropped again
    when the load fails or stores nothing.
    """
    from tqdm import tqdm

    from hybridsearch.errors import CollectionNotFoundError
    from hybridsearch.loaders import SkipLog, count_documents, iter_documents

    total = count_documents(args.paths)
    with _client(args) as hs:
        max_chars = hs.settings.max_document_chars
        if args.strict:  # all or nothing: read everything before writing anything
            for _ in iter_documents(args.paths, SkipLog(strict=True), max_chars=max_chars):
                pass
        log = SkipLog(strict=args.strict)
        documents = iter_documents(args.paths, log, max_chars=max_chars)
        created = False
        try:
            existing = hs.get_collection(args.collection)
        except CollectionNotFoundError:
            # The model is picked from the first documents (hybridsearch.models.picker).
            sample = list(islice(documents, SAMPLE_DOCUMENTS))
            documents = chain(sample, documents)
            c = hs.create_collection(
                args.collection, model=args.model, sample_texts=[d.text for d in sample]
            )
            created = True
            _print_model_choice(c, prefix=f"created collection {c.name}, model")
        else:
            _check_model_matches(existing, args.model)
        try:
            with tqdm(total=total, unit="doc", desc=f"ingest {args.collection}") as bar:
                report = hs.add_documents(
                    args.collection,
                    documents,
                    batch_size=args.batch_size,
                    on_progress=bar.update,
                    bulk=args.bulk,
                )
        except HybridSearchError:
            if created:
                hs.drop_collection(args.collection)
            raise
        if created and report.added == 0:
            hs.drop_collection(args.collection)
            print(f"dropped collection {args.collection}: nothing was stored", file=sys.stderr)
        calibrated = hs.get_collection(args.collection) if report.calibration else None
    for skipped in log.skipped:
        print(f"hybridsearch: skipped {skipped.where}: {skipped.reason}", file=sys.stderr)
    for warning in report.warnings:
        print(f"hybridsearch: warning: {warning}", file=sys.stderr)
    if report.calibration is not None:
        _print_calibration(args.collection, report.calibration, calibrated)
    print(
        f"{report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
        f"{len(log.skipped)} skipped, {report.chunks} chunks written"
    )
    if log.skipped:
        raise SystemExit(EXIT_PARTIAL)


def _check_model_matches(collection: Any, model: str | None) -> None:
    """``ingest --model`` names the model of a collection it creates; an existing
    collection keeps its own, so naming another one is a mistake to report."""
    from hybridsearch.errors import InvalidInputError

    if model is not None and model != collection.embedding_model:
        raise InvalidInputError(
            f"collection {collection.name!r} exists with model {collection.embedding_model!r};"
            f" --model {model!r} applies only to a collection that ingest creates: leave it "
            "out, or ingest into a new collection"
        )


def cmd_embed(args: argparse.Namespace) -> None:
    """Print a query's embedding as a pgvector literal, for SQL users (psql -v q=...)."""
    with _client(args) as hs:
        embedder = hs.embedder(hs.get_collection(args.collection))
        vector = embedder.embed_query(args.text)
    print("[" + ",".join(f"{x:.7g}" for x in vector.tolist()) + "]")


def cmd_delete(args: argparse.Namespace) -> None:
    with _client(args) as hs:
        deleted = hs.delete_documents(args.collection, args.ids)
    print(f"deleted {deleted} of {len(args.ids)} documents")


# -- search --------------------------------------------------------------------------------


def cmd_search(args: argparse.Namespace) -> None:
    # before connecting or loading a model: the flags alone are wrong
    check_rerank_depth(args.rerank_depth, args.top_k)
    with _client(args) as hs:
        result = hs.search(
            args.collection,
            args.query,
            top_k=args.top_k,
            top_n=args.top_n,
            filter=args.filter,
            mode=args.mode,
            rerank=not args.no_rerank,
            rerank_depth=args.rerank_depth,
            one_per_document=args.one_per_document,
            fusion=args.fusion,
            rrf_k=args.rrf_k,
            vector_weight=args.vector_weight,
            keyword_weight=args.keyword_weight,
        )
        empty_reason = _why_empty(hs, args) if not result.results else None
    if result.note:
        print(f"note: {result.note}", file=sys.stderr)
    if args.json:
        _print_json(result.to_dict())
        return
    from hybridsearch.cli_output import print_search_result, print_stages

    if args.show_stages:
        print_stages(
            result, sys.stdout, set(args.relevant or ()), one_per_document=args.one_per_document
        )
        return
    print_search_result(result, sys.stdout, empty_reason=empty_reason)


def _why_empty(hs: Any, args: argparse.Namespace) -> str:
    """Why a search found nothing, as far as can be told without another search."""
    chunks = next((c.chunks for c in hs.list_collections() if c.name == args.collection), 0)
    if chunks == 0:
        return f"collection {args.collection} holds no documents yet; run `hybridsearch ingest`"
    if args.mode == "keyword":
        where = " that match the filter" if args.filter else ""
        return f"no chunks{where} contain any searchable word of the query"
    if args.filter:
        return f"no chunk's metadata contains the filter {args.filter}"
    return "nothing matched"


# -- reranker ------------------------------------------------------------------------------


def cmd_reranker(args: argparse.Namespace) -> None:
    from pathlib import Path

    from hybridsearch.eval.beir import (
        describe,
        load_corpus,
        load_qrels,
        load_queries,
        training_pairs,
    )
    from hybridsearch.loaders import SkipLog
    from hybridsearch.models.training import fine_tune_cross_encoder

    # bad lines are skipped and listed, as eval and tune do
    log = SkipLog()
    pairs = training_pairs(
        load_corpus(Path(args.corpus)),
        load_queries(Path(args.queries), log),
        load_qrels(Path(args.qrels), log),
        limit_queries=args.limit_queries,
        negatives_per_query=args.negatives,
    )
    if log.skipped:
        print(f"hybridsearch: skipped {describe(log.summary())}", file=sys.stderr)
    from tqdm import tqdm

    print(f"fine-tuning {args.base} on {len(pairs)} pairs for {args.steps} steps", file=sys.stderr)
    # On a terminal only (disable=None): a log or a pipe gets the two summary lines.
    with tqdm(total=args.steps, desc="reranker train", unit="step", disable=None) as bar:

        def on_step(done: int, loss: float) -> None:
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            bar.update(done - bar.n)

        out = fine_tune_cross_encoder(
            args.base,
            pairs,
            Path(args.out),
            max_steps=args.steps,
            batch_size=args.batch_size,
            max_length=args.max_length,
            on_step=on_step,
        )
    print(out)


# -- parser --------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridsearch", description="Hybrid search with reranking inside PostgreSQL."
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show model loading progress and reports (hidden by default)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser(
        "db",
        help="install, upgrade or remove the schema (alembic); the embedded server's URL; stop it",
    )
    db.add_argument("action", choices=["upgrade", "downgrade", "current", "url", "stop"])
    db.add_argument("revision", nargs="?", help="target revision (default head / one step down)")
    db.set_defaults(func=cmd_db)

    coll = sub.add_parser("collections", help="create, list or drop collections")
    coll_sub = coll.add_subparsers(dest="action", required=True)
    create = coll_sub.add_parser("create")
    create.add_argument("name")
    create.add_argument(
        "--model",
        help="embedding model name or path (default: HYBRIDSEARCH_EMBEDDING_MODEL, else"
        " all-MiniLM-L6-v2: without text to look at; `ingest` picks one from the documents)",
    )
    create.add_argument("--distance", default="cosine", choices=["cosine", "l2", "inner_product"])
    create.add_argument(
        "--analyzer",
        default="mixed",
        help="mixed (English + CJK bigrams, default), cjk, or a text search configuration",
    )
    create.add_argument("--bm25-k1", type=float, default=1.2)
    create.add_argument("--bm25-b", type=float, default=0.75)
    create.add_argument(
        "--chunk-tokens", type=_positive_int, default=CollectionSettings.chunk_max_tokens
    )
    create.add_argument(
        "--overlap-tokens", type=_positive_int, default=CollectionSettings.chunk_overlap_tokens
    )
    create.add_argument("--query-prompt", help='prefix for queries, e.g. "query: "')
    create.add_argument("--document-prompt", help='prefix for documents, e.g. "passage: "')
    add_argument(create, HNSW_M, default=HNSW_M.default)
    add_argument(create, HNSW_EF_CONSTRUCTION, default=HNSW_EF_CONSTRUCTION.default)
    listing = coll_sub.add_parser("list")
    listing.add_argument("--json", action="store_true")
    drop = coll_sub.add_parser("drop")
    drop.add_argument("name")
    calibrate = coll_sub.add_parser(
        "calibrate",
        help="measure how well each leg reads the collection's text and set the fusion"
        " weights from it (ingest does this by itself when a collection is new or has doubled)",
    )
    calibrate.add_argument("name")
    register_vector_index_commands(coll_sub)
    coll.set_defaults(func=cmd_collections)

    ingest = sub.add_parser("ingest", help="add BEIR corpus.jsonl, .txt/.md files or folders")
    ingest.add_argument("--collection", required=True)
    ingest.add_argument(
        "--model",
        help="embedding model name or path for a collection this command creates (default:"
        " HYBRIDSEARCH_EMBEDDING_MODEL, else picked from the first documents' text)",
    )
    ingest.add_argument("--batch-size", type=_positive_int, default=64)
    ingest.add_argument(
        "--bulk",
        action="store_true",
        help="drop the collection's search indexes during the load and build them once after"
        " (faster for large loads; searches of the collection are slow until it ends)",
    )
    ingest.add_argument(
        "--strict",
        action="store_true",
        help="check every file first and load nothing if one file or line cannot be read"
        " (default: skip it, report it and exit with status 1)",
    )
    ingest.add_argument("paths", nargs="+")
    ingest.set_defaults(func=cmd_ingest)

    embed = sub.add_parser(
        "embed", help="print a query's embedding (collection's model) as a pgvector literal"
    )
    embed.add_argument("--collection", required=True)
    embed.add_argument("text")
    embed.set_defaults(func=cmd_embed)

    delete = sub.add_parser("delete", help="delete documents by external id")
    delete.add_argument("--collection", required=True)
    delete.add_argument("ids", nargs="+")
    delete.set_defaults(func=cmd_delete)

    search = sub.add_parser("search", help="hybrid search with reranking")
    search.add_argument("--collection", required=True)
    for param in (MODE, TOP_K, TOP_N):
        add_argument(search, param, default=param.default)
    search.add_argument("--filter", help='metadata filter as JSON, e.g. \'{"lang": "en"}\'')
    for fusion_param in (FUSION, RRF_K, VECTOR_WEIGHT, KEYWORD_WEIGHT):
        add_argument(search, fusion_param, default_text="the collection's")
    search.add_argument("--reranker", help="cross-encoder name or path (default: settings)")
    search.add_argument("--no-rerank", action="store_true")
    add_argument(search, RERANK_DEPTH, default_text="all of TopK")
    search.add_argument(
        "--one-per-document",
        action=argparse.BooleanOptionalAction,
        default=ONE_PER_DOCUMENT,
        help="TopN holds each document's best chunk only (default: %(default)s)",
    )
    search.add_argument("--json", action="store_true", help="print the JSON contract")
    search.add_argument(
        "--show-stages",
        action="store_true",
        help="show the fused TopN and the reranked TopN side by side",
    )
    search.add_argument(
        "--relevant",
        type=lambda text: [part.strip() for part in text.split(",") if part.strip()],
        metavar="DOC_ID,...",
        help="documents judged relevant to this query, marked * in --show-stages",
    )
    search.add_argument("query")
    search.set_defaults(func=cmd_search)

    reranker = sub.add_parser(
        "reranker",
        help="fine-tune a cross-encoder on judged pairs with random negatives "
        "(quick; `train reranker` mines hard negatives and validates)",
    )
    reranker_sub = reranker.add_subparsers(dest="action", required=True)
    train = reranker_sub.add_parser("train", help="BEIR corpus + queries + qrels -> model dir")
    train.add_argument("--corpus", required=True)
    train.add_argument("--queries", required=True)
    train.add_argument("--qrels", required=True, help="use a train split, never the test split")
    train.add_argument("--out", required=True)
    train.add_argument("--base", default="sentence-transformers/all-MiniLM-L6-v2")
    train.add_argument("--steps", type=_positive_int, default=240)
    train.add_argument("--batch-size", type=_positive_int, default=16)
    train.add_argument("--max-length", type=_positive_int, default=256, help="tokens per pair")
    train.add_argument("--limit-queries", type=_positive_int)
    train.add_argument("--negatives", type=_positive_int, default=3)
    reranker.set_defaults(func=cmd_reranker)
    register_serve_command(sub)
    register_keys_commands(sub)
    register_eval_commands(sub)
    register_sync_commands(sub)
    register_train_commands(sub)
    return parser


def quiet_model_loading() -> None:
    """No weight-loading progress bars or load reports from transformers and the hub.

    Environment variables, so that nothing heavy is imported here and an explicit setting
    of the user's still wins.
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


class _StderrNotes(logging.Handler):
    """One line on whatever ``sys.stderr`` is when a record arrives."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"hybridsearch: note: {record.getMessage()}", file=sys.stderr)


_NOTES = _StderrNotes(logging.WARNING)


def show_notes_on_stderr() -> None:
    """hybridsearch's own warnings (a model falling back to torch, say) as one line each."""
    package = logging.getLogger("hybridsearch")
    if _NOTES not in package.handlers:
        package.addHandler(_NOTES)
    package.setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:
        quiet_model_loading()
    show_notes_on_stderr()
    try:
        args.func(args)
    except HybridSearchError as exc:
        print(f"hybridsearch: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("hybridsearch: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
