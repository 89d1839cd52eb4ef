"""Which reranker recipe: one training run of ``hybridsearch train reranker``'s recipe, measured.

    python bench/reranker_recipe.py [--collection scifact] [--data ../shared/data/scifact]
        [--train-queries N] [--validation-queries 100] [--steps 150] [--batch-size 4]
        [--negatives 7] [--negative-depth 30] [--max-length 128] [--learning-rate 5e-5]
        [--validate-every 50] [--json-lines PATH]

SciFact TRAIN qrels only (the test split is never read). The judged queries are split as
``train reranker`` splits them (seeded, by query id); the validation queries' fused TopK
are mined once through search and cached next to ``--json-lines``; the first
``--train-queries`` of the training queries (all by default) train with the given recipe.
Prints and appends one JSON line: the validation nDCG@10 of the fused order and of the
best checkpoint's reranking at depths 10, 20 and 30, every validation, seconds per step.
Figures, not a test; bench/NOTES.md "Training a reranker" says what was chosen.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import time
from dataclasses import asdict, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np

from hybridsearch import HybridSearch
from hybridsearch.eval.beir import judged_queries, load_qrels, load_queries
from hybridsearch.models.training import fine_tune_listwise
from hybridsearch.train.calibration import fit_calibration
from hybridsearch.train.mining import CandidateLists, mine_candidates, ranking_groups, split_queries
from hybridsearch.train.recipes import RerankerRecipe
from hybridsearch.train.reranker import HeldOutRanking

DEPTHS = (10, 20, 30)


def main() -> None:
    defaults = RerankerRecipe()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--collection", default="scifact")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--train-queries", type=int)
    parser.add_argument("--json-lines", type=Path, default=Path("/tmp/reranker_recipe.jsonl"))
    for name in (
        "validation_queries",
        "steps",
        "batch_size",
        "negatives",
        "negative_depth",
        "max_length",
        "validate_every",
    ):
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name)
        )
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--head-learning-rate", type=float)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    recipe = replace(
        defaults,
        **{
            k: getattr(args, k)
            for k in (
                "validation_queries",
                "steps",
                "batch_size",
                "negatives",
                "negative_depth",
                "max_length",
                "validate_every",
                "learning_rate",
                "head_learning_rate",
            )
        },
        patience=0,
    )
    queries = load_queries(args.data / "queries.jsonl")
    qrels = load_qrels(args.data / "qrels" / "train.tsv")
    cache = args.json_lines.with_suffix(f".{args.collection}.candidates.pickle")
    with HybridSearch() as hs:
        judged, judged_qrels, _ = judged_queries(queries, qrels)
        train, held_out = split_queries(judged, recipe.validation_queries, recipe.seed)
        if cache.exists():
            lists: CandidateLists = pickle.loads(cache.read_bytes())
        else:
            lists = mine_candidates(hs, args.collection, judged, recipe.top_k)
            cache.write_bytes(pickle.dumps(lists))
    if args.train_queries:
        train = dict(list(train.items())[: args.train_queries])
    groups = ranking_groups(
        train,
        judged_qrels,
        lists,
        negatives=recipe.negatives,
        depth=recipe.negative_depth,
        seed=recipe.seed,
    )
    validation = HeldOutRanking(held_out, judged_qrels, lists, max(DEPTHS))
    started = time.perf_counter()
    _, log = fine_tune_listwise(
        recipe.base_model,
        groups,
        max_steps=recipe.steps,
        batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate,
        head_learning_rate=recipe.head_learning_rate,
        max_length=recipe.max_length,
        seed=recipe.seed,
        validate=validation,
        validate_every=recipe.validate_every,
    )
    seconds = time.perf_counter() - started
    best = [s for s, _ in log.validations].index(log.best_step)
    row = {
        "label": args.label,
        "recipe": asdict(recipe),
        "train_queries": len(train),
        "groups": len(groups),
        "validation_queries": len(held_out),
        "fused_ndcg@10": round(validation.measure(None), 4),
        "reranked_ndcg@10": {
            d: round(validation.measure(validation.logits[best], d), 4) for d in DEPTHS
        },
        # the rerank score search uses: the logistic fit of logit and fused score, fitted
        # and measured on the same validation candidates (in-sample: 3 parameters)
        "combined_ndcg@10_in_sample": {
            d: round(validation.measure(combined(validation, best, d), d), 4) for d in DEPTHS
        },
        "validations_at_depth_30": log.validations,
        "best_step": log.best_step,
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / log.steps, 2),
    }
    print(json.dumps(row))
    with args.json_lines.open("a", encoding="utf-8") as out:
        out.write(json.dumps(row) + "\n")


def combined(validation: HeldOutRanking, best: int, depth: int) -> np.ndarray:
    """Each candidate's combined logit, fitted on the candidates down to ``depth``."""
    logits = validation.logits[best]
    inside = np.concatenate([np.arange(len(h)) < depth for h in validation.heads()])
    fit = fit_calibration(logits[inside], validation.labels[inside], validation.fused[inside])
    return fit.slope * logits + fit.fused_weight * validation.fused


if __name__ == "__main__":
    main()
