"""Fusion against its better leg: nDCG@10 of each leg and of the hybrid with the old and
the new default fusion, on a collection as stored, optionally with a weakened keyword leg.

    python bench/fusion.py --collection C --queries Q.jsonl --qrels QRELS.tsv
                           [--keyword-noise 0.5] [--seed 7] [--top-k 100] [--json OUT]

Every query goes through the product's own search (hybridsearch.search_hybrid): the
vector leg, the keyword leg, the hybrid with 0.1.0's default (RRF, k 60, equal weights)
and with the collection's defaults (today: z-score fusion with the weights the
collection's calibration measured). ``--keyword-noise p`` builds the mismatched
condition of a weak keyword leg: the keyword leg (and the keyword side of both hybrids)
sees each query with every word replaced, with probability p, by a word drawn from the
other queries (vocabulary mismatch plus noise, as paraphrased or entity queries give
BM25), while the vector leg embeds the query as written. The noise is seeded, so a run
is repeatable. Prints one row: legs, hybrids, and each hybrid over the better leg.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from hybridsearch import HybridSearch
from hybridsearch.eval.beir import judged_queries, load_qrels, load_queries
from hybridsearch.eval.metrics import Evaluator
from hybridsearch.eval.runs import Rankings, document_ranking, to_run

OLD_DEFAULT = {"fusion": "rrf", "rrf_k": 60, "vector_weight": 1.0, "keyword_weight": 1.0}


def noisy(text: str, vocabulary: list[str], p: float, rng: random.Random) -> str:
    """``text`` with each word replaced, with probability ``p``, by one of ``vocabulary``."""
    return " ".join(rng.choice(vocabulary) if rng.random() < p else w for w in text.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collection", required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--qrels", type=Path, required=True)
    parser.add_argument("--keyword-noise", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    queries, qrels, _ = judged_queries(load_queries(args.queries), load_qrels(args.qrels))
    vocabulary = sorted({w for t in load_queries(args.queries).values() for w in t.split()})
    rng = random.Random(args.seed)
    stages = ("vector", "keyword", "hybrid_old", "hybrid_new")
    rankings: dict[str, Rankings] = {stage: {} for stage in stages}
    with HybridSearch() as hs:
        collection = hs.get_collection(args.collection)
        embedder = hs.embedder(collection)
        for qid, text in sorted(queries.items()):
            keyword_text = noisy(text, vocabulary, args.keyword_noise, rng)
            embedding = embedder.embed_query(text)
            calls = {
                "vector": (text, {"mode": "vector"}),
                "keyword": (keyword_text, {"mode": "keyword"}),
                "hybrid_old": (keyword_text, OLD_DEFAULT),
                "hybrid_new": (keyword_text, {}),
            }
            for stage, (query, options) in calls.items():
                found = hs.search(
                    args.collection,
                    query,
                    top_k=args.top_k,
                    top_n=1,
                    rerank=False,
                    query_embedding=embedding,
                    **options,  # type: ignore[arg-type]
                ).candidates
                rankings[stage][qid] = document_ranking(h.document_id for h in found)
    evaluator = Evaluator(qrels, ["ndcg@10"])
    scores = {stage: evaluator.mean(to_run(rankings[stage]))["ndcg@10"] for stage in stages}
    better = max(scores["vector"], scores["keyword"])
    defaults = collection.fusion_defaults
    row = {
        "collection": args.collection,
        "queries": len(queries),
        "keyword_noise": args.keyword_noise,
        **{stage: round(value, 4) for stage, value in scores.items()},
        "old_over_better": round(scores["hybrid_old"] / better, 3),
        "new_over_better": round(scores["hybrid_new"] / better, 3),
        "new_fusion": f"{defaults.fusion} v{defaults.vector_weight:g} k{defaults.keyword_weight:g}",
    }
    print(
        f"{row['collection']} ({row['queries']} queries, keyword noise {args.keyword_noise:g}):"
        f" vector {scores['vector']:.3f}  keyword {scores['keyword']:.3f}"
        f"  hybrid old {scores['hybrid_old']:.3f} ({row['old_over_better']:.3f}x better leg)"
        f"  new {scores['hybrid_new']:.3f} ({row['new_over_better']:.3f}x) [{row['new_fusion']}]"
    )
    if args.json:
        args.json.write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
