"""What reaches the LLM: TopN chunks as ranked, against one chunk per document.

For each judged query of a BEIR split, the fused TopK (``rerank=False``: the order every
reranker starts from) is cut to TopN two ways: the first N chunks, and the first N chunks
of distinct documents. Printed per N: how often the first N chunks repeat a document, and
each cut's document recall@N and nDCG@N (a document judged relevant counts once).

    python bench/top_n_documents.py --collection demo_scifact \\
        --queries ../shared/data/scifact/queries.jsonl \\
        --qrels ../shared/data/scifact/qrels/train.tsv
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from hybridsearch import HybridSearch
from hybridsearch.eval.beir import load_qrels, load_queries
from hybridsearch.search import distinct_documents


def _ndcg(ranked: list[str], relevant: dict[str, int], n: int) -> float:
    gains = [relevant.get(doc, 0) for doc in ranked[:n]]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = sorted(relevant.values(), reverse=True)[:n]
    best = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / best if best else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collection", required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--qrels", type=Path, required=True)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--limit", type=int, default=300)
    args = parser.parse_args()
    queries, qrels = load_queries(args.queries), load_qrels(args.qrels)
    judged = [q for q in qrels if q in queries][: args.limit]
    sizes = (3, 5, 10)
    totals = {n: {"repeat": 0.0, "recall": [0.0, 0.0], "ndcg": [0.0, 0.0]} for n in sizes}
    with HybridSearch() as hs:
        for qid in judged:
            hits = hs.search(
                args.collection, queries[qid], top_k=args.top_k, top_n=1, rerank=False
            ).candidates
            relevant = {d: g for d, g in qrels[qid].items() if g > 0}
            for n in sizes:
                cuts = (hits[:n], distinct_documents(hits)[:n])
                docs = [list(dict.fromkeys(h.document_id for h in cut)) for cut in cuts]
                totals[n]["repeat"] += len(docs[0]) < len(cuts[0])
                for i, ranked in enumerate(docs):
                    found = len(set(ranked) & set(relevant))
                    totals[n]["recall"][i] += found / len(relevant)
                    totals[n]["ndcg"][i] += _ndcg(ranked, relevant, n)
    print(f"{len(judged)} queries of {args.qrels}, fused TopK {args.top_k}")
    print(
        "N | TopN repeats a document | recall@N chunks / one per document"
        " | nDCG@N chunks / one per document"
    )
    for n in sizes:
        t, q = totals[n], len(judged)
        print(
            f"{n} | {t['repeat'] / q:.1%} | {t['recall'][0] / q:.4f} / {t['recall'][1] / q:.4f}"
            f" | {t['ndcg'][0] / q:.4f} / {t['ndcg'][1] / q:.4f}"
        )


if __name__ == "__main__":
    main()
