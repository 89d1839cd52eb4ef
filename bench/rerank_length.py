"""How long a passage should reach the cross-encoder, and in what batches: quality and time.

    python bench/rerank_length.py [--collection demo_scifact] [--reranker DIR]
                                  [--queries N] [--latency-queries M] [--json PATH]

Over SciFact TRAIN queries the test reranker did not train on (the first 600 judged ones
are its training set), takes each query's fused TopK=50 chunks from an ingested SciFact
collection (the README's main command makes ``demo_scifact``) and reranks them with the
default backend at several ``max_length`` values:

* the (query, chunk) pairs' token lengths: percentiles and the share each length truncates;
* nDCG@10 of the reranked documents (a document ranks at its best chunk) at each length up
  to the reranker's own limit (the test reranker was trained at 64 tokens and reads no
  more; pass ``--reranker`` for another);
* the p50 time of one 50-pair rerank per (max_length, batch size), sampled interleaved,
  with a MiniLM cross-encoder that reads 512 tokens (an untrained head: timing only).

Prints figures; asserts nothing. bench/NOTES.md "Rerank length" says what was chosen.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
from suite.timing import interleaved, summary
from transformers import AutoTokenizer

from hybridsearch import HybridSearch, Settings
from hybridsearch.eval.beir import load_qrels, load_queries
from hybridsearch.eval.metrics import evaluate
from hybridsearch.models.reranker import Reranker
from hybridsearch.search import rerank_order

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))  # for tests.model_fixtures
DATA = REPO.parent / "shared" / "data" / "scifact"
LENGTHS = (64, 128, 192, 256, 320, 384, 512)
BATCHES = (8, 16, 32)
TOP_K = 50
DEPTHS = (5, 10, 20, 30, 40, 50)
TRAINED_ON = 600


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collection", default="demo_scifact")
    parser.add_argument("--reranker", help="cross-encoder folder (default: the test reranker)")
    parser.add_argument("--queries", type=int, default=0, help="held-out queries (0: all)")
    parser.add_argument("--latency-queries", type=int, default=15)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--json", type=Path)
    return parser.parse_args()


def _held_out(data: Path, n: int) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    queries = load_queries(data / "queries.jsonl")
    qrels = {
        qid: {doc: rel for doc, rel in docs.items() if rel > 0}
        for qid, docs in load_qrels(data / "qrels" / "train.tsv").items()
        if qid in queries
    }
    chosen = [qid for qid, docs in qrels.items() if docs][TRAINED_ON:]
    chosen = chosen[:n] if n else chosen
    return {q: queries[q] for q in chosen}, {q: qrels[q] for q in chosen}


def timing_model() -> str:
    """The packaged MiniLM with an untrained one-label head, saved once under /tmp."""
    from sentence_transformers import CrossEncoder

    from hybridsearch.models.resolve import packaged_minilm_path

    folder = Path(tempfile.gettempdir()) / "hybridsearch-bench-cross-encoder-512"
    if not (folder / "config.json").is_file():
        model = CrossEncoder(str(packaged_minilm_path()), num_labels=1, max_length=512)
        model.save_pretrained(str(folder))
    return str(folder)


def _ranked(doc_ids: list[str]) -> dict[str, float]:
    """A run from an ordered list of documents, each at its first (best) place."""
    run: dict[str, float] = {}
    for i, doc in enumerate(doc_ids):
        run.setdefault(doc, -float(i))
    return run


def _document_run(doc_ids: list[str], scores: np.ndarray) -> dict[str, float]:
    """Each document at its best chunk's score."""
    run: dict[str, float] = {}
    for doc, score in zip(doc_ids, scores.tolist(), strict=True):
        run[doc] = max(run.get(doc, float("-inf")), float(score))
    return run


def main() -> None:
    args = _arguments()
    if args.reranker is None:
        from tests.model_fixtures import build_test_reranker

        folder = Path(tempfile.gettempdir()) / "hybridsearch-test-reranker"
        args.reranker = str(build_test_reranker(folder, args.data))
    queries, qrels = _held_out(args.data, args.queries)
    settings = Settings.from_env()
    with HybridSearch(settings) as hs:
        candidates = {
            qid: hs.search(args.collection, text, top_k=TOP_K, rerank=False).candidates
            for qid, text in queries.items()
        }
    own_limit = Reranker(args.reranker).load().max_seq_length
    rerankers = {n: Reranker(args.reranker, max_length=n) for n in LENGTHS if n <= own_limit}
    timing_model_path = timing_model()
    tokenizer = AutoTokenizer.from_pretrained(timing_model_path)
    lengths = np.array(
        [
            len(tokenizer(queries[qid], hit.text, truncation=False)["input_ids"])
            for qid, hits in candidates.items()
            for hit in hits
        ]
    )
    fused = {qid: _ranked([h.document_id for h in hits]) for qid, hits in candidates.items()}
    quality: dict[str, float] = {"fused": evaluate(qrels, fused, ["ndcg@10"])["ndcg@10"]}
    scores: dict[int, dict[str, np.ndarray]] = {}
    for n, reranker in rerankers.items():
        scores[n] = {
            qid: reranker.score(queries[qid], [h.text for h in hits])
            for qid, hits in candidates.items()
        }
        run = {
            qid: _document_run([h.document_id for h in hits], scores[n][qid])
            for qid, hits in candidates.items()
        }
        quality[str(n)] = evaluate(qrels, run, ["ndcg@10"])["ndcg@10"]
    # Depth: the first D fused candidates reranked, the rest after them in fused order.
    longest = scores[max(scores)]
    by_depth = {}
    for depth in DEPTHS:
        run = {
            qid: _ranked(
                rerank_order([h.document_id for h in hits], longest[qid][:depth].tolist(), depth)
            )
            for qid, hits in candidates.items()
        }
        by_depth[str(depth)] = evaluate(qrels, run, ["ndcg@10"])["ndcg@10"]
    timed = [
        (queries[q], [h.text for h in candidates[q]])
        for q in list(candidates)[: args.latency_queries]
    ]
    variants = {
        f"{n}/{b}": Reranker(timing_model_path, max_length=n, batch_size=b).score
        for n in LENGTHS
        for b in BATCHES
    }
    samples = interleaved(
        timed, {k: (lambda case, f=f: f(*case)) for k, f in variants.items()}, warmup=1
    )
    figures: dict[str, Any] = {
        "queries": len(queries),
        "pairs": int(lengths.size),
        "backend": Reranker(timing_model_path).backend,
        "reranker_limit": own_limit,
        "pair_tokens": {f"p{q}": float(np.percentile(lengths, q)) for q in (50, 90, 99, 100)},
        "truncated_share": {str(n): float((lengths > n).mean()) for n in LENGTHS},
        "ndcg@10": quality,
        "ndcg@10_by_depth": by_depth,
        "rerank_ms": {k: summary(v) for k, v in samples.items()},
    }
    print(
        f"{figures['queries']} held-out SciFact train queries, {figures['pairs']} (query, chunk) "
        f"pairs from {args.collection!r}; models on {figures['backend']}; the reranker "
        f"reads at most {own_limit} tokens"
    )
    print("pair tokens:", ", ".join(f"{k} {v:.0f}" for k, v in figures["pair_tokens"].items()))
    print(f"fused nDCG@10 {quality['fused']:.4f}")
    print(
        "| max_length | truncated | nDCG@10 | "
        + " | ".join(f"p50 ms batch {b}" for b in BATCHES)
        + " |"
    )
    print("|---:|---:|---:|" + "---:|" * len(BATCHES))
    for n in LENGTHS:
        times = " | ".join(f"{figures['rerank_ms'][f'{n}/{b}']['p50']:.0f}" for b in BATCHES)
        ndcg = f"{quality[str(n)]:.4f}" if str(n) in quality else "-"
        print(f"| {n} | {figures['truncated_share'][str(n)]:.3f} | {ndcg} | {times} |")
    print()
    print(
        f"rerank depth (reranker at {max(scores)} tokens): nDCG@10 "
        + ", ".join(f"{d} {v:.4f}" for d, v in by_depth.items())
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
