"""CPU inference backends against fp32 torch: latency, and agreement as an nDCG@10 ratio.

    python bench/backends.py [--queries N] [--skip K] [--distractors D]
                             [--latency-queries M] [--threads 1] [--json PATH]

For the query embedder (the packaged all-MiniLM-L6-v2) and the reranker (the SciFact test
reranker of tests/model_fixtures.py, reused from its cache or trained in about 4 minutes),
under ``torch`` (fp32), ``onnx`` (fp32) and ``onnx-int8``:

* latency, sampled interleaved (the order of backends rotates per query) on one thread by
  default: one query embedding, and one rerank of the 50 torch-dense candidates of a query
  (SciFact query + passage pairs); shown as ratios to torch measured in the same run;
* agreement on SciFact TRAIN: dense retrieval nDCG@10 with each backend's embeddings (exact
  cosine in numpy), and nDCG@10 of the torch-dense top 50 reranked by each backend, each as
  a ratio to torch's (target: at least 0.99).

The corpus is all of SciFact unless ``--distractors D`` keeps only the judged documents of
the chosen queries plus D random others (embedding all 5,183 abstracts three times takes
about 25 minutes on one core). Timing never fails: this prints figures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import numpy.typing as npt
from suite.timing import interleaved, ratio, summary

from hybridsearch.eval.beir import load_corpus, load_qrels, load_queries
from hybridsearch.eval.metrics import evaluate
from hybridsearch.models.backend import RUNTIMES, default_cache_dir
from hybridsearch.models.embedder import Embedder
from hybridsearch.models.reranker import Reranker
from hybridsearch.models.resolve import configure_torch_threads, packaged_minilm_path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))  # for tests.model_fixtures
DATA = REPO.parent / "shared" / "data" / "scifact"
RERANK_DEPTH = 50
Vectors = npt.NDArray[np.float32]


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=0, help="judged TRAIN queries (0: all)")
    parser.add_argument(
        "--skip",
        type=int,
        default=0,
        help="skip the first K judged queries (the test reranker trained on the first 600)",
    )
    parser.add_argument(
        "--distractors", type=int, default=0, help="random non-judged docs kept (0: corpus)"
    )
    parser.add_argument("--latency-queries", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads")
    parser.add_argument("--reranker", help="cross-encoder folder (default: the test reranker)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="ONNX export cache")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()


def _test_reranker(data: Path) -> Path:
    from tests.model_fixtures import build_test_reranker

    return build_test_reranker(Path(tempfile.gettempdir()) / "hybridsearch-test-reranker", data)


def _dataset(
    data: Path, skip: int, n_queries: int, distractors: int, seed: int
) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """Corpus (maybe reduced), judged TRAIN queries (maybe n after the first ``skip``) and
    their qrels."""
    corpus = load_corpus(data / "corpus.jsonl")
    queries = load_queries(data / "queries.jsonl")
    qrels = {
        qid: {doc: rel for doc, rel in docs.items() if rel > 0 and doc in corpus}
        for qid, docs in load_qrels(data / "qrels" / "train.tsv").items()
        if qid in queries
    }
    chosen = [(qid, docs) for qid, docs in qrels.items() if docs][skip:]
    qrels = dict(chosen[:n_queries] if n_queries else chosen)
    queries = {qid: queries[qid] for qid in qrels}
    if distractors:
        judged = {doc for docs in qrels.values() for doc in docs}
        others = sorted(set(corpus) - judged)
        keep = judged | set(random.Random(seed).sample(others, min(distractors, len(others))))
        corpus = {doc: text for doc, text in corpus.items() if doc in keep}
    return corpus, queries, qrels


def _embedder_figures(
    args: argparse.Namespace,
    corpus: dict[str, str],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Latency and dense nDCG@10 per backend; also torch's top 50 per query for reranking."""
    model = str(packaged_minilm_path())
    embedders = {
        b: Embedder(model, backend=b, torch_threads=args.threads, onnx_cache_dir=args.cache_dir)
        for b in RUNTIMES
    }
    for embedder in embedders.values():
        embedder.load()
    texts = list(queries.values())[: args.latency_queries]
    samples = interleaved(texts, {b: e.embed_query for b, e in embedders.items()}, warmup=3)

    doc_ids = list(corpus)
    documents = [corpus[d] for d in doc_ids]
    figures: dict[str, Any] = {}
    query_vectors: dict[str, Vectors] = {}
    torch_top: dict[str, list[str]] = {}
    for backend, embedder in embedders.items():
        started = time.perf_counter()
        doc_vectors = embedder.embed_documents(documents)
        seconds = time.perf_counter() - started
        vectors = np.stack([embedder.embed_query(queries[qid]) for qid in qrels])
        query_vectors[backend] = vectors
        similarity = vectors @ doc_vectors.T
        top = np.argsort(-similarity, axis=1)[:, :100]
        run = {
            qid: {doc_ids[j]: float(similarity[i, j]) for j in top[i]}
            for i, qid in enumerate(qrels)
        }
        if backend == "torch":
            torch_top = {qid: list(run[qid])[:RERANK_DEPTH] for qid in run}
        figures[backend] = {
            "latency_ms": summary(samples[backend]),
            "ndcg@10": evaluate(qrels, run, ["ndcg@10"])["ndcg@10"],
            "corpus_docs_per_s": len(documents) / seconds,
        }
    for backend in RUNTIMES:
        cosines = (query_vectors[backend] * query_vectors["torch"]).sum(axis=1)
        figures[backend]["query_cosine_to_torch"] = {
            "mean": float(cosines.mean()),
            "min": float(cosines.min()),
        }
    return figures, torch_top


def _scorer(reranker: Reranker) -> Callable[[tuple[str, list[str]]], Vectors]:
    return lambda case: reranker.score(*case)


def _reranker_figures(
    args: argparse.Namespace,
    corpus: dict[str, str],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    candidates: dict[str, list[str]],
) -> dict[str, Any]:
    """Latency of a 50-pair rerank and nDCG@10 of the reranked torch-dense top 50."""
    path = args.reranker or str(_test_reranker(args.data))
    rerankers = {
        b: Reranker(path, backend=b, torch_threads=args.threads, onnx_cache_dir=args.cache_dir)
        for b in RUNTIMES
    }
    for reranker in rerankers.values():
        reranker.load()
    cases = [(queries[qid], [corpus[d] for d in candidates[qid]]) for qid in qrels]
    timed = cases[: args.latency_queries]
    samples = interleaved(timed, {b: _scorer(r) for b, r in rerankers.items()}, warmup=2)
    figures: dict[str, Any] = {}
    top10: dict[str, dict[str, list[str]]] = {}
    for backend, reranker in rerankers.items():
        run: dict[str, dict[str, float]] = {}
        for qid, (query, passages) in zip(qrels, cases, strict=True):
            scores = reranker.score(query, passages)
            run[qid] = {d: float(s) for d, s in zip(candidates[qid], scores, strict=True)}
        top10[backend] = {
            q: sorted(r, key=r.__getitem__, reverse=True)[:10] for q, r in run.items()
        }
        figures[backend] = {
            "latency_ms": summary(samples[backend]),
            "ndcg@10": evaluate(qrels, run, ["ndcg@10"])["ndcg@10"],
            "pairs_per_call": len(timed[0][1]) if timed else 0,
        }
    for backend in RUNTIMES:
        overlap = [
            len(set(top10[backend][q]) & set(top10["torch"][q])) / 10 for q in top10["torch"]
        ]
        figures[backend]["top10_overlap_with_torch"] = float(np.mean(overlap))
    figures["model"] = path
    return figures


def _table(results: dict[str, Any]) -> str:
    lines = [
        "| stage | backend | p50 ms | p95 ms | p50 / torch | mean / torch | nDCG@10 "
        "| nDCG / torch | agreement with torch |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    pairs = results["reranker"]["torch"]["pairs_per_call"]
    for stage, what in (("embed 1 query", "embedder"), (f"rerank {pairs} pairs", "reranker")):
        figures = results[what]
        base = figures["torch"]
        for backend in RUNTIMES:
            row = figures[backend]
            latency = row["latency_ms"]
            if what == "embedder":
                cos = row["query_cosine_to_torch"]
                agreement = f"query cosine mean {cos['mean']:.4f}, min {cos['min']:.4f}"
            else:
                agreement = f"top-10 overlap {row['top10_overlap_with_torch']:.3f}"
            lines.append(
                f"| {stage} | {backend} | {latency['p50']:.2f} | {latency['p95']:.2f} "
                f"| {ratio(latency['p50'], base['latency_ms']['p50']):.2f} "
                f"| {ratio(latency['mean'], base['latency_ms']['mean']):.2f} "
                f"| {row['ndcg@10']:.4f} | {ratio(row['ndcg@10'], base['ndcg@10']):.4f} "
                f"| {agreement} |"
            )
    return "\n".join(lines)


def main() -> None:
    args = _arguments()
    configure_torch_threads(args.threads)
    if args.cache_dir is None:
        args.cache_dir = default_cache_dir()
    started = time.perf_counter()
    corpus, queries, qrels = _dataset(
        args.data, args.skip, args.queries, args.distractors, args.seed
    )
    embedder, candidates = _embedder_figures(args, corpus, queries, qrels)
    reranker = _reranker_figures(args, corpus, queries, qrels, candidates)
    results: dict[str, Any] = {
        "setup": {
            "queries": len(qrels),
            "skipped_queries": args.skip,
            "corpus_docs": len(corpus),
            "latency_queries": min(args.latency_queries, len(qrels)),
            "threads": args.threads,
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "seconds": 0.0,
        },
        "embedder": embedder,
        "reranker": reranker,
    }
    results["setup"]["seconds"] = round(time.perf_counter() - started, 1)
    setup = results["setup"]
    print(
        f"SciFact train: {setup['queries']} judged queries (after the first {args.skip}), "
        f"{setup['corpus_docs']} documents; "
        f"latency over {setup['latency_queries']} queries, interleaved, "
        f"{args.threads} thread(s), {setup['cpu_count']} CPUs; {setup['seconds']} s in all"
    )
    print()
    print(_table(results))
    print()
    print("p50 / torch below 1 is faster than fp32 torch; nDCG / torch is the agreement target")
    print("(at least 0.99). Timings are noisy when other work shares the CPUs.")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
