"""nDCG@10, Recall@100 and MRR@10 of vector, keyword and hybrid candidates on SciFact.

Train split by default; ``hybridsearch eval`` does the same with every metric and stage.

    python bench/eval_scifact.py [--split train] [--collection scifact]

Ingests ../shared/data/scifact/corpus.jsonl into the collection if it is empty.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hybridsearch import HybridSearch
from hybridsearch.errors import CollectionNotFoundError
from hybridsearch.eval.beir import load_qrels, load_queries
from hybridsearch.eval.pipeline import PipelineConfig, evaluate_pipeline
from hybridsearch.loaders import iter_documents

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--split", default="train")
    parser.add_argument("--collection", default="scifact")
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--no-ingest", action="store_true", help="evaluate what is stored")
    args = parser.parse_args()
    with HybridSearch() as hs:
        try:
            hs.get_collection(args.collection)
        except CollectionNotFoundError:
            hs.create_collection(args.collection)
        if not args.no_ingest:
            started = time.perf_counter()
            report = hs.add_documents(args.collection, iter_documents([DATA / "corpus.jsonl"]))
            print(f"ingest: {report} in {time.perf_counter() - started:.1f}s")
        queries = load_queries(DATA / "queries.jsonl")
        qrels = load_qrels(DATA / "qrels" / f"{args.split}.tsv")
        started = time.perf_counter()
        evaluation = evaluate_pipeline(
            hs,
            args.collection,
            queries,
            qrels,
            stages=("vector", "keyword", "hybrid"),
            ks=(10, 100),
            config=PipelineConfig(top_k=args.top_k, top_n=1),
        )
        for stage, metrics in evaluation.stages.items():
            figures = "  ".join(
                f"{m}={metrics[m]:.4f}" for m in ("ndcg@10", "recall@100", "mrr@10")
            )
            print(f"{args.split} {stage:8s} {figures}")
        print(f"evaluation: {time.perf_counter() - started:.1f}s for {evaluation.queries} queries")


if __name__ == "__main__":
    main()
