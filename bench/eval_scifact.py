"""nDCG@10 of vector, keyword and hybrid candidates on SciFact (train split by default).

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
from hybridsearch.eval.runner import evaluate_modes
from hybridsearch.loaders import iter_documents

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--split", default="train")
    parser.add_argument("--collection", default="scifact")
    parser.add_argument("--top-k", type=int, default=100)
    args = parser.parse_args()
    with HybridSearch() as hs:
        try:
            hs.get_collection(args.collection)
        except CollectionNotFoundError:
            hs.create_collection(args.collection)
        started = time.perf_counter()
        report = hs.add_documents(args.collection, iter_documents([DATA / "corpus.jsonl"]))
        print(f"ingest: {report} in {time.perf_counter() - started:.1f}s")
        queries = load_queries(DATA / "queries.jsonl")
        qrels = load_qrels(DATA / "qrels" / f"{args.split}.tsv")
        started = time.perf_counter()
        for scores in evaluate_modes(hs, args.collection, queries, qrels, top_k=args.top_k):
            figures = "  ".join(f"{k}={v:.4f}" for k, v in scores.measures.items())
            print(f"{args.split} {scores.mode:8s} {figures}")
        print(f"evaluation: {time.perf_counter() - started:.1f}s for {len(qrels)} queries")


if __name__ == "__main__":
    main()
